"""One demo run: the fake upstreams, a bridge on the demo's config, the traffic, the summary.

The bridge comes from the caller (`make_bridge(config, home, seed)`), so this package never
imports proxy/: `bridge demo` (cli/demo.py) hands it `proxy.runtime.Bridge`, as `bridge up`
starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bridge_cli.config.loader import parse_config
from bridge_cli.config.model import Config
from bridge_cli.demo.scenario import ROUTE, Schedule, config_yaml, schedule
from bridge_cli.demo.summary import Tally, summarize
from bridge_cli.demo.traffic import POPULAR, POPULAR_SHARE, Traffic
from bridge_cli.demo.upstreams import Behaviour, FakeLLM

MakeBridge = Callable[[Config, Path, int], Any]  # -> a proxy.runtime.Bridge, not started


@dataclass(frozen=True)
class Options:
    """What the user chose: `duration` seconds (None: until quit), `rate` calls a second."""

    duration: float | None
    rate: float
    seed: int


class Demo:
    """Start with `start()`, stop with `stop()`, which returns the summary."""

    def __init__(self, options: Options, home: Path, make_bridge: MakeBridge,
                 keep: bool = False) -> None:
        self.options = options
        self.home = home
        self.keep = keep
        self.plan: Schedule = schedule(options.duration, options.rate, 1 - POPULAR_SHARE,
                                       len(POPULAR))
        rng = random.Random(options.seed)  # one seed: the upstreams' draws and the traffic's
        self.upstreams = [
            FakeLLM("cloud", Behaviour(slow_share=0.05, fail_share=0.02, outages=self.plan.outages,
                                       drift_at=self.plan.drift_at), random.Random(rng.random())),
            FakeLLM("local", Behaviour(slow_share=0.1, drift_at=self.plan.drift_at),
                    random.Random(rng.random())),
        ]
        self._traffic_rng = random.Random(rng.random())
        self._make_bridge = make_bridge
        self.bridge = None
        self.traffic: Traffic | None = None
        self.tally: Tally | None = None
        self.stopped_early = False
        self._stop_traffic = asyncio.Event()
        self._traffic_task: asyncio.Task | None = None
        self._t0 = 0.0

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def start(self) -> None:
        """Upstreams, then the bridge, then the traffic; on failure, what started stops."""
        self._t0 = asyncio.get_running_loop().time()
        self.tally = Tally(at=self.elapsed)
        try:
            for up in self.upstreams:
                await up.start()
            cloud, local = self.upstreams
            config = parse_config(config_yaml(cloud.url, local.url, self.plan, self.options.seed),
                                  "<bridge demo>")
            self.bridge = self._make_bridge(config, self.home, self.options.seed)
            self.bridge.bus.subscribe(self.tally)
            await self.bridge.start()
        except BaseException:
            await self._close()
            raise
        listener = next(lst for lst in self.bridge.view().listeners() if lst.name == ROUTE)
        self.route_url = f"http://{listener.address}"
        self.traffic = Traffic(self.route_url, self.options.rate, self._traffic_rng)
        self._traffic_task = asyncio.create_task(self.traffic.run(self._stop_traffic),
                                                 name="demo-traffic")

    @property
    def control_url(self) -> str:
        return self.bridge.view().control_url

    @property
    def token(self) -> str:
        return self.bridge.token

    async def wait(self, stop: asyncio.Event) -> None:
        """Until the duration has passed or `stop` is set (Ctrl-C, the dashboard quit)."""
        timeout = None if self.options.duration is None else \
            max(0.0, self.options.duration - self.elapsed())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout)
            self.stopped_early = self.options.duration is not None

    async def stop(self) -> dict:
        """Stop the traffic (calls in flight finish), read the budget, stop everything;
        returns the summary."""
        self._stop_traffic.set()
        if self._traffic_task is not None:
            await asyncio.gather(self._traffic_task, return_exceptions=True)
        elapsed = self.elapsed()
        budget = await self._budget()
        await self._close()
        return summarize(
            self.tally, elapsed=elapsed, stopped_early=self.stopped_early,
            seed=self.options.seed, rate=self.options.rate,
            app=self.traffic.outcomes if self.traffic else {}, budget=budget,
            upstream_calls={u.name: {"calls": u.counts.calls, "failed": u.counts.failed}
                            for u in self.upstreams},
            home=str(self.home) if self.keep else None)

    async def _budget(self) -> dict | None:
        """The route's budget from the control API, once what was reserved has settled (the
        settler lands settlements in batches)."""
        headers = {"authorization": f"Bearer {self.token}"}
        entry = None
        async with httpx.AsyncClient(trust_env=False, timeout=5.0, headers=headers) as c:
            for _ in range(20):
                try:
                    report = (await c.get(self.control_url + "/api/v1/spend")).json()
                except (httpx.HTTPError, ValueError):
                    return entry
                entry = next((b for b in report.get("budgets") or []
                              if b["budget"] == f"route:{ROUTE}"), None)
                if entry is None or float(entry["reserved_usd"]) == 0:
                    return entry
                await asyncio.sleep(0.1)
        return entry

    async def _close(self) -> None:
        if self.bridge is not None:
            await self.bridge.drain(1.0)
            await self.bridge.stop()
        for up in self.upstreams:
            await up.stop()

