"""Faults for test suites: inject through the control API, always removed on exit.

    from bridge_cli.testing import fault

    def test_app_survives_rate_limits():
        with fault("openai", preset="openai-429", probability="30%") as f:
            run_my_app()
        assert f.hits > 0

Keyword arguments are the config keys of a fault (`for_` for `for`). The bridge is found
through $BRIDGE_HOME/control.json, or pass `home=`. With pytest, add
`pytest_plugins = ["bridge_cli.testing"]` to conftest.py for the `bridge_fault` fixture,
which removes every fault it made when the test ends, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge_cli.control.client import ControlClient
from bridge_cli.errors import ControlError, UsageError
from bridge_cli.store import bridge_home


class InjectedFault:
    """A fault injected by `fault()`: its name, and its hits so far."""

    def __init__(self, name: str, client: ControlClient) -> None:
        self.name = name
        self._client = client
        self._last_hits = 0

    @property
    def hits(self) -> int:
        """How many tries this fault has hit (the last count seen once it is removed)."""
        try:
            data = self._client.faults()
            for f in [*data.get("finished", ()), *data["faults"]]:
                if f["name"] == self.name:
                    self._last_hits = f["hits"]
        except ControlError:
            pass
        return self._last_hits

    def remove(self) -> None:
        """Remove the fault now (also done on exit); a fault already gone is fine."""
        self.hits  # noqa: B018 - keep the final count readable after removal
        try:
            self._client.remove_fault(self.name)
        except (UsageError, ControlError):
            pass


@contextmanager
def fault(route: str = "*", *, home: Path | None = None, **keys) -> Iterator[InjectedFault]:
    """Inject a fault into the running bridge for the duration of the block."""
    client = ControlClient.from_home(home or bridge_home())
    spec = {"route": route, **{("for" if k == "for_" else k): v for k, v in keys.items()}}
    answer = client.add_fault(spec)
    injected = InjectedFault(answer["fault"]["name"], client)
    try:
        yield injected
    finally:
        injected.remove()


try:  # the pytest fixture, when pytest is there
    import pytest

    @pytest.fixture
    def bridge_fault():
        """`bridge_fault(route, **keys)` injects a fault removed when the test ends."""
        made: list[InjectedFault] = []

        def inject(route: str = "*", *, home: Path | None = None, **keys) -> InjectedFault:
            client = ControlClient.from_home(home or bridge_home())
            spec = {"route": route, **{("for" if k == "for_" else k): v for k, v in keys.items()}}
            f = InjectedFault(client.add_fault(spec)["fault"]["name"], client)
            made.append(f)
            return f

        yield inject
        for f in made:
            f.remove()
except ImportError:  # pragma: no cover - bridge runs without pytest
    pass
