"""bridge's CA, kept in mitmproxy's confdir inside $BRIDGE_HOME."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import certs

CA_BASENAME = "mitmproxy"  # mitmproxy's own file names, so its tlsconfig finds them


def ensure_ca(home: Path) -> Path:
    """Create the CA if it doesn't exist yet; return the PEM path clients should trust."""
    confdir = home / "mitmproxy"
    confdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    certs.CertStore.from_store(confdir, CA_BASENAME, 2048)
    return confdir / f"{CA_BASENAME}-ca-cert.pem"
