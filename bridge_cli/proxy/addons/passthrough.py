"""Pass-through traffic's failures in bridge's words: a host the explicit proxy can't reach
gets bridge's JSON error instead of mitmproxy's HTML page, and a client that doesn't trust
bridge's CA is told what to run, once per host.

mitmproxy writes its error page itself after the `error` hook, and an addon can't replace
it there (mitmproxy PR #7999 would allow that). It builds the page in one function,
`make_error_response`, called in the task that ran the hook: the hook leaves bridge's page
in a context variable of that task, and the function, wrapped once, sends it instead.
"""

from __future__ import annotations

import contextvars
import re

from mitmproxy import flow as mflow
from mitmproxy import http, tls
from mitmproxy.net.http import http1
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers.http import _http1

from bridge_cli.engine.events import EventBus, NoticeEvent
from bridge_cli.engine.replies import passthrough_failure
from bridge_cli.proxy.flowstate import state_of
from bridge_cli.proxy.respond import apply_reply

MAX_HOSTS = 1000  # hosts remembered as already told about (then the set starts over)

# bridge's page for the error mitmproxy is about to answer in this task, if any.
_PAGE: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("bridge_page", default=None)


def _error_page(status_code: int, message: str = "") -> bytes:
    page = _PAGE.get()
    return page if page is not None else _mitmproxy_error_page(status_code, message)


_mitmproxy_error_page = getattr(_http1.make_error_response, "mitmproxy", _http1.make_error_response)
_error_page.mitmproxy = _mitmproxy_error_page  # so a second import wraps mitmproxy's, not ours
_http1.make_error_response = _error_page


class PassthroughAddon:
    """bridge's JSON error for pass-through requests whose host failed; bridge's notice for
    clients that refuse bridge's certificate."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.failed_connects: dict[str, str] = {}  # client connection id -> why
        self.told: set[str] = set()  # hosts whose clients were told to trust bridge's CA

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        # The flow's error hook that follows can't tell a failed connect from a dropped one.
        self.failed_connects[data.client.id] = data.server.error or "connection failed"

    def client_disconnected(self, client) -> None:
        self.failed_connects.pop(client.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        failed = self.failed_connects.pop(flow.client_conn.id, None)
        st = state_of(flow)
        if st is None or st.route is not None or flow.response is not None or flow.error is None:
            return
        msg = flow.error.msg
        if failed is None and (msg == mflow.Error.KILLED_MESSAGE or "client" in msg.lower()):
            return  # the client's side failed ("Client disconnected."): no one to answer
        how = ("connect" if failed is not None else
               "tls" if any(w in msg for w in ("TLS", "SSL", "ertificate")) else "answer")
        reply = passthrough_failure(flow.request.pretty_host, flow.request.port, how,
                                    failed or msg)
        apply_reply(flow, reply)
        flow.response.headers["connection"] = "close"  # mitmproxy closes it after the page
        _PAGE.set(http1.assemble_response(flow.response))

    def tls_failed_client(self, data: tls.TlsData) -> None:
        host = data.conn.sni or (data.context.server.address or ("?",))[0]
        if host in self.told:
            return
        if len(self.told) >= MAX_HOSTS:
            self.told.clear()
        self.told.add(host)
        self.bus.publish(NoticeEvent("warning", untrusted_message(host, data.conn.error or "")))


def untrusted_message(host: str, why: str) -> str:
    """What bridge says when a client's TLS handshake for `host` fails; `why`: mitmproxy's
    reason, whose last parenthesis holds OpenSSL's words."""
    if any(s in why for s in ("unknown ca", "bad certificate", "certificate unknown")):
        cause = "the client does not trust bridge's CA"
    elif "disconnected during the handshake" in why:
        cause = "the client hung up during the TLS handshake: it may not trust bridge's CA"
    else:
        detail = re.search(r"\(([^()]*)\)\s*$", why)
        cause = ("the client may not trust bridge's CA"
                 + (f" ({detail[1]})" if detail else f" ({why})" if why else ""))
    return (f"HTTPS to {host} through the proxy failed: {cause}. Run `bridge ca` and use "
            "the lines it prints in the app's shell (said once per host)")
