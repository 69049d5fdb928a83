"""bridge's CA, kept in mitmproxy's confdir inside $BRIDGE_HOME, and a bundle of it with the
system's CAs for clients whose setting replaces their trust store (SSL_CERT_FILE)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from mitmproxy import certs

CA_BASENAME = "mitmproxy"  # mitmproxy's own file names, so its tlsconfig finds them
BUNDLE_NAME = "bridge-ca-bundle.pem"  # the system's CAs plus bridge's, beside bridge's CA

# Where systems keep their CA bundle when OpenSSL's compiled-in default isn't there:
# Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE, macOS/BSD.
_SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                   "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem")


def ensure_ca(home: Path) -> Path:
    """Create the CA if it doesn't exist yet; return the PEM path clients should trust."""
    confdir = home / "mitmproxy"
    confdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    certs.CertStore.from_store(confdir, CA_BASENAME, 2048)
    return confdir / f"{CA_BASENAME}-ca-cert.pem"


def system_ca_file() -> Path | None:
    """The system's CA bundle: OpenSSL's default file (never $SSL_CERT_FILE, which may name
    bridge's own bundle), a well-known path, else certifi's; None when there is none."""
    candidates = [ssl.get_default_verify_paths().openssl_cafile, *_SYSTEM_BUNDLES]
    try:
        import certifi  # httpx's dependency: there even where the OS keeps no bundle

        candidates.append(certifi.where())
    except ImportError:
        pass
    for name in candidates:
        path = Path(name)
        if path.name != BUNDLE_NAME and path.is_file() and path.stat().st_size > 0:
            return path
    return None


def write_trust_bundle(ca_cert: Path, system: Path | None = None) -> Path:
    """Write, beside `ca_cert`, one PEM file of the system's CAs (`system`, default
    system_ca_file()) and bridge's CA: what SSL_CERT_FILE can name without dropping the
    public CAs; rewritten each call, so it follows the system's updates."""
    system = system or system_ca_file()
    public = system.read_text(encoding="utf-8", errors="replace") if system else ""
    text = (public.rstrip("\n") + "\n\n" if public.strip() else "") + \
        f"# bridge's CA ({ca_cert})\n" + ca_cert.read_text()
    bundle = ca_cert.with_name(BUNDLE_NAME)
    tmp = bundle.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, bundle)  # a client reading it meanwhile sees the old or the new, whole
    return bundle


def ensure_trust_bundle(home: Path) -> Path:
    """bridge's CA (created when missing) bundled with the system's CAs; the bundle's path."""
    return write_trust_bundle(ensure_ca(home))
