"""Hot reload: a new config applies to new requests at once, listeners open and close
without a restart, and a bad file is refused while the old config keeps serving.

The file is read and checked in a worker thread: a large config takes a second to check,
and requests keep flowing meanwhile. No file stops the watcher: a refused one leaves it
watching for the next edit."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from bridge_cli.config.loader import load_config
from bridge_cli.config.model import Config
from bridge_cli.engine.events import NoticeEvent
from bridge_cli.errors import BridgeError, ConfigError
from bridge_cli.proxy.listeners import check_bindable, plan_listeners

WATCH_INTERVAL = 0.5  # seconds between looks at the config file
REFUSED = "reload refused, the old config keeps serving: "

log = logging.getLogger("bridge.reload")


@dataclass
class ReloadResult:
    """What a reload did: applied, or refused with the reason (the old config serves on)."""

    applied: bool
    message: str

    def to_dict(self) -> dict:
        return {"applied": self.applied, "message": self.message}


class Reloading:
    """The reload part of a Bridge (proxy/runtime.py), which holds the state it changes."""

    async def reload(self, config: Config | None = None) -> ReloadResult:
        """Apply a new config (read from the file when None); refuse a bad one."""
        async with self._reload_lock:
            try:
                if config is None:
                    config = await self._load_file()
                result = await self._apply(config)
            except BridgeError as e:
                result = ReloadResult(False, REFUSED + str(e))
            self.bus.publish(NoticeEvent("info" if result.applied else "error", result.message))
            return result

    async def _load_file(self) -> Config:
        """The config file, loaded and checked off the event loop; a ConfigError if bad."""
        path = self.config_path
        if path is None:
            raise ConfigError("bridge runs on the built-in default; there is no file to reload")
        try:
            return await asyncio.to_thread(load_config, path)
        except BridgeError:
            raise
        except Exception as e:  # a bug in the checks: refuse the file, never stop serving
            log.exception("loading %s failed", path)
            reason = (str(e).splitlines() or [""])[0][:200]
            raise ConfigError(f"{path}: can't be loaded ({type(e).__name__}: {reason}); "
                              "this is a bug in bridge, please report it") from None

    async def _apply(self, config: Config) -> ReloadResult:
        old = self.state.config
        previous = {p.name: p.listen for p in self._plans}
        plans = plan_listeners(config, previous)
        current = {p.spec for p in self._plans}
        for plan in plans:
            if plan.spec not in current and not plan.picked:  # a new or moved listener binds first
                check_bindable(plan.listen, plan.key)
        notes = []
        if config.control.listen != old.control.listen:
            notes.append("control.listen changes at the next start")
        if config.store != old.store:
            notes.append("store changes at the next start")
        # New flows see the new config at once; flows in flight keep the one they started with.
        self.state.mode_routes = {p.spec: p.name for p in plans if p.name != "proxy"}
        self.state.resilience.sync(config)
        self.state.chaos.sync_config(config.chaos.faults)
        self.state.config = config
        self._plans = plans
        if {p.spec for p in plans} != current:
            self.master.options.update(mode=[p.spec for p in plans])
            await asyncio.sleep(0)
            await self._await_listeners(plans)
        msg = f"config reloaded from {config.source}: {len(config.routes)} route(s)"
        if notes:
            msg += " (" + "; ".join(notes) + ")"
        return ReloadResult(True, msg)

    async def _watch_loop(self) -> None:
        path = self.config_path
        last = _file_sig(path)
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            sig = _file_sig(path)
            if sig != last:
                await asyncio.sleep(0.1)  # let an editor finish writing
                last = _file_sig(path)
                try:
                    await self.reload()
                except Exception:  # applying failed: keep watching for the next edit
                    log.exception("reloading %s failed", path)


def _file_sig(path: Path) -> tuple | None:
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return None
