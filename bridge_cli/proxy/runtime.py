"""One running bridge: the mitmproxy master, bridge's addons, forwarder and control API.

mitmproxy's Master is global per process, so there is one Bridge per process. Everything
runs on one asyncio loop: mitmproxy's servers, the forwarder, the control API and the
config watcher.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
from pathlib import Path

from mitmproxy import options as mitm_options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    dns_resolver,
    next_layer,
    proxyserver,
    tlsconfig,
)
from mitmproxy.master import Master

from bridge_cli.config.model import Config
from bridge_cli.control.server import ControlServer
from bridge_cli.control.view import PROXY_LISTENER
from bridge_cli.engine.breaker import OPEN, Transition
from bridge_cli.engine.budget import Budgets
from bridge_cli.engine.cache import ReplayMode
from bridge_cli.engine.chaos import Chaos
from bridge_cli.engine.clock import Clock
from bridge_cli.engine.events import BreakerEvent, EventBus, FlowEvent
from bridge_cli.engine.resilience import Resilience
from bridge_cli.errors import BridgeError, StartupError
from bridge_cli.proxy.addons import bridge_addons
from bridge_cli.proxy.addons.cache import CacheAddon
from bridge_cli.proxy.drift_keeper import DriftKeeper
from bridge_cli.proxy.flow_detail import FlowDetailAddon, FlowDetails
from bridge_cli.proxy.forwarder import Forwarder
from bridge_cli.proxy.listeners import (
    ListenerPlan,
    bind_error,
    check_bindable,
    pick,
    plan_listeners,
    settled_servers,
)
from bridge_cli.proxy.outbound import make_session
from bridge_cli.proxy.reload import Reloading
from bridge_cli.proxy.settler import Settler
from bridge_cli.proxy.snapshot import BridgeSnapshot
from bridge_cli.proxy.state import LiveState
from bridge_cli.store import BreakerStates, FlowLog, open_store
from bridge_cli.store.responses import ResponseStores

log = logging.getLogger("bridge")
BIND_TRIES = 5  # ports picked for a port-0 listener before giving up (each taken meanwhile)


def mitmproxy_addons() -> list:
    """The mitmproxy addons bridge runs on: the proxy core, TLS, DNS and the safety ones.

    Not mitmproxy's full default set: mitmproxy calls every hook of every addon for every
    flow, and the ~25 interactive ones (playback, export, map/modify, save, ...) cost bridge
    time on each request while doing nothing for it."""
    return [
        core.Core(),
        block.Block(),  # refuses clients from other machines, as mitmproxy does by default
        disable_h2c.DisableH2C(),
        proxyserver.Proxyserver(),
        dns_resolver.DnsResolver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
    ]


def mitmproxy_confdir(home: Path) -> Path:
    """Where bridge keeps mitmproxy's CA and settings: inside $BRIDGE_HOME."""
    return home / "mitmproxy"


class Bridge(Reloading):
    """Start, reload and stop one bridge on the running event loop."""

    def __init__(self, config: Config, home: Path, *, config_path: Path | None = None,
                 watch: bool = True, seed: int | None = None,
                 replay: ReplayMode | None = None, clock: Clock | None = None) -> None:
        self.home = home
        self.config_path = config_path
        self.watch = watch
        self.bus = EventBus()
        self.state = LiveState(config=config, bus=self.bus,
                               config_path=str(config_path) if config_path else None)
        self.bus.subscribe(self.state.on_event)
        self.details = FlowDetails()  # the last flows in full, for GET /api/v1/flows/{id}
        self.bus.subscribe(self.details.on_event)
        self.forwarder = Forwarder()
        self.replay = replay or ReplayMode()
        self.clock = clock or Clock()  # policy time: tests pass a ManualClock
        self.responses = ResponseStores(home)
        # One seed for every chaos draw: the config's, --seed's, or a random one (printed).
        self.seed = seed if seed is not None else (
            config.chaos.seed if config.chaos.seed is not None else secrets.randbelow(10**6))
        self.state.chaos = Chaos(self.seed, self.clock.monotonic)
        self.state.chaos.sync_config(config.chaos.faults)
        self.master: Master | None = None
        self.cache_addon: CacheAddon | None = None
        self.control = None
        self.store = None
        self.settler: Settler | None = None
        self.drift: DriftKeeper | None = None
        self.flowlog: FlowLog | None = None
        self.token = secrets.token_urlsafe(24)
        self._tasks: list[asyncio.Task] = []
        self._plans: list[ListenerPlan] = []
        self._reload_lock = asyncio.Lock()
        self._stopped = asyncio.Event()

    # --- start -------------------------------------------------------------------
    async def start(self) -> None:
        """Bind everything the config asks for, or raise a BridgeError and bind nothing."""
        config = self.state.config
        control_listen = config.control.listen  # port 0: the OS picks one as it binds
        self._plans = plan_listeners(config)
        for plan in self._plans:
            if not plan.picked:  # a picked port taken meanwhile is picked again at bind time
                check_bindable(plan.listen, plan.key)
        check_bindable(control_listen, "control.listen")

        self.store = open_store(config.store, self.home)
        self.flowlog = FlowLog(self.home / "flows.jsonl")
        self.state.resilience = Resilience(clock=self.clock.monotonic, wall=self.clock.wall,
                                           rng=self.state.rng, on_transition=self._on_breaker)
        self.state.resilience.sync(config)
        self._restore_breakers()
        self.bus.subscribe(self._log_event)
        self.state.session = make_session()
        await self.forwarder.start()

        self.control = ControlServer(self.view(), self.token)
        await self.control.start(control_listen)
        await self._start_master(self._plans)
        self._write_control_file()
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="bridge-flush"))
        if self.watch and self.config_path is not None:
            self._tasks.append(asyncio.create_task(self._watch_loop(), name="bridge-watch"))
        # The ~100k objects of start-up live as long as bridge does: move them out of the
        # collector's way, so a full collection pauses requests for ms, not ~80 ms.
        gc.collect()
        gc.freeze()

    async def _start_master(self, plans: list[ListenerPlan]) -> None:
        confdir = mitmproxy_confdir(self.home)
        confdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        opts = mitm_options.Options()
        self.master = Master(opts)
        loop = asyncio.get_running_loop()
        self.settler = Settler(self.store, Budgets(self.store, self.clock.wall),
                               lambda e: loop.call_soon_threadsafe(self.bus.publish, e))
        self.drift = DriftKeeper(self.store)
        ours = bridge_addons(self.state, self.bus, self.forwarder, self.responses, self.clock,
                             self.replay, self.settler, self.drift)
        self.cache_addon = next(a for a in ours if isinstance(a, CacheAddon))
        self.master.addons.add(*mitmproxy_addons())
        self.master.addons.add(*ours, FlowDetailAddon(self.details))  # after RecordAddon
        opts.update(
            mode=[p.spec for p in plans] or [],
            connection_strategy="lazy",
            confdir=str(confdir),
            http2=True,
        )
        proxy = self.state.config.proxy
        if proxy is not None and proxy.ca_file:
            opts.update(ssl_verify_upstream_trusted_ca=proxy.ca_file)
        self.state.mode_routes = {p.spec: p.name for p in plans if p.name != PROXY_LISTENER}
        self._tasks.append(asyncio.create_task(self.master.run(), name="mitmproxy-master"))
        await self._await_listeners(plans)

    async def _await_listeners(self, plans: list[ListenerPlan], timeout: float = 10.0) -> None:
        """Wait until mitmproxy serves every planned listener. A port bridge picked that was
        taken meanwhile is picked again (BIND_TRIES times); any other failure is fatal."""
        for _ in range(BIND_TRIES):
            servers = await settled_servers(self.master.addons.get("proxyserver"), plans, timeout)
            failed = [p for p in plans if not servers[p.spec].listen_addrs]
            if not failed:
                break
            plans = self._repick(plans, failed, servers)
        else:
            p = failed[0]
            raise StartupError(f"{p.key}: every free port picked on {p.listen.host} was taken "
                               f"before it could be bound ({BIND_TRIES} tries); try again")
        self.state.bound = {p.name: tuple(servers[p.spec].listen_addrs[0][:2]) for p in plans}

    def _repick(self, plans: list[ListenerPlan], failed: list[ListenerPlan],
                servers: dict) -> list[ListenerPlan]:
        """New ports for failed picked listeners, handed to mitmproxy; an explicit one raises."""
        for p in failed:
            error = servers[p.spec].last_exception
            if not p.picked and isinstance(error, OSError):
                raise bind_error(p.listen, p.key, error)
            if not p.picked:
                raise StartupError(f"{p.key}: mitmproxy could not listen on {p.listen}: {error}")
        fresh = {p.name: pick(p) for p in failed}
        for p in failed:
            log.info("%s: port %d was taken before bridge could bind it; trying port %d",
                     p.key, p.listen.port, fresh[p.name].listen.port)
        plans = [fresh.get(p.name, p) for p in plans]
        self._plans = plans
        self.state.mode_routes = {p.spec: p.name for p in plans if p.name != PROXY_LISTENER}
        self.master.options.update(mode=[p.spec for p in plans])
        return plans

    def view(self) -> BridgeSnapshot:
        """The narrow, plain-data view of this bridge that control/ and cli/ use."""
        return BridgeSnapshot(self)

    @staticmethod
    def ensure_ca(home: Path) -> Path:
        """bridge's CA certificate in `home` (created when missing): the PEM to trust."""
        from bridge_cli.proxy.certs import ensure_ca

        return ensure_ca(home)

    @staticmethod
    def trust_bundle(home: Path) -> Path:
        """bridge's CA bundled with the system's CAs: the file SSL_CERT_FILE names."""
        from bridge_cli.proxy.certs import ensure_trust_bundle

        return ensure_trust_bundle(home)

    def _write_control_file(self) -> None:
        path = self.home / "control.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.control.url, "token": self.token, "pid": os.getpid()}, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    # --- run / stop ----------------------------------------------------------------
    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def drain(self, grace: float) -> int:
        """Stop accepting connections, refuse new requests on open ones (503
        bridge_stopping), and wait up to `grace` seconds for the requests in flight to
        finish; returns how many were still running. Call `stop` next."""
        self.state.draining = True
        if self.master is not None:
            for server in list(self.master.addons.get("proxyserver").servers):
                try:
                    await server.stop()  # closes the listening socket; connections stay
                except Exception as e:  # noqa: BLE001 - already stopped or never bound
                    log.debug("stopping a listener: %s", e)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.state.inflight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return max(self.state.inflight, 0)

    async def stop(self) -> None:
        """Close listeners and release everything; safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for t in self._tasks:
            if t.get_name() != "mitmproxy-master":
                t.cancel()
        if self.master is not None:
            self.master.shutdown()
            master_task = next((t for t in self._tasks if t.get_name() == "mitmproxy-master"), None)
            if master_task is not None:
                try:
                    await asyncio.wait_for(master_task, 5)
                except (TimeoutError, asyncio.CancelledError):
                    pass
        if self.control is not None:
            await self.control.stop()
        await self.forwarder.stop()
        if self.state.session is not None:
            await self.state.session.close()
        if self.flowlog is not None:
            self.flowlog.close()
        if self.cache_addon is not None:
            # Cached answers still being written land before the stores close.
            await asyncio.get_running_loop().run_in_executor(
                None, self.cache_addon.writer.close)
        if self.drift is not None:  # what drift learned lands before the store closes
            await asyncio.get_running_loop().run_in_executor(None, self.drift.stop)
        if self.settler is not None:  # spend still settling lands before the store closes
            self.settler.close_quick()
            await asyncio.get_running_loop().run_in_executor(None, self.settler.close)
        if self.store is not None:
            self.store.close()
        self.responses.close()
        control = self.home / "control.json"
        try:
            if json.loads(control.read_text()).get("token") == self.token:
                control.unlink()
        except (OSError, ValueError):
            pass

    # --- breakers --------------------------------------------------------------------
    def _on_breaker(self, t: Transition) -> None:
        self.bus.publish(BreakerEvent(t.route, t.upstream, t.old, t.new, t.reason))
        # Transitions are rare, but a store write can block: keep it off the event loop.
        asyncio.get_running_loop().run_in_executor(None, self._persist_breaker, t)

    def _persist_breaker(self, t: Transition) -> None:
        states = BreakerStates(self.store)
        try:
            if t.new == OPEN and t.opened_at_wall is not None:
                states.save_open(t.route, t.upstream, t.opened_at_wall)
            else:
                states.save_closed(t.route, t.upstream)
        except BridgeError as e:
            log.warning("could not save breaker state %s/%s: %s", t.route, t.upstream, e)

    def _restore_breakers(self) -> None:
        """Open breakers stay open across a restart, for what is left of open_for."""
        try:
            saved = {(s.route, s.upstream): s for s in BreakerStates(self.store).load()}
        except BridgeError as e:  # a busy store must not stop the start: breakers begin closed
            log.warning("could not read saved breaker state: %s", e)
            return
        for name, rr in self.state.resilience.routes.items():
            for upstream, breaker in rr.breakers.items():
                if (s := saved.get((name, upstream))) is not None:
                    breaker.restore(s.opened_at)

    # --- events ----------------------------------------------------------------------
    def _log_event(self, event) -> None:
        if self.flowlog is not None:
            # FlowEvents are built from redacted url and headers (proxy/addons/record.py).
            self.flowlog.write(event.to_dict(), redacted=isinstance(event, FlowEvent))

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            if self.flowlog is not None:
                self.flowlog.flush()
            touches = self.responses.take_touches()  # cache hits, for LRU eviction
            if touches:
                loop.run_in_executor(None, _record_touches, touches)


def _record_touches(touches) -> None:
    for store, keys in touches:
        store.flush_touches(keys)
