"""Redaction of credentials in headers, URLs and free log text (pure; no I/O).

A redacted secret keeps what helps a person tell two keys apart and nothing that helps
anyone use one:

    authorization: Bearer sk-…[redacted:sha256:1a2b3c4d]
    x-api-key: sk-…[redacted:sha256:1a2b3c4d]          (same key, same fingerprint)
    cookie: session=[redacted:sha256:9f8e7d6c]; theme=[redacted:sha256:0a1b2c3d]
    https://example.com/v1/models?key=AIza…[redacted:sha256:5e6f7a8b]&alt=json
    https://user:[redacted:sha256:0c1d2e3f]@example.com/

- An authorization scheme word from a known list (Bearer, Basic, Digest, …) is kept.
- A vendor's public key prefix (at most 4 characters: "sk-", "ghp_", "AIza", "xoxb",
  "eyJ", …) is kept when a secret of 20 characters or more starts with it; never any
  other character, never the tail.
- The fingerprint is the first 8 hex digits of sha256 of the secret itself (without its
  scheme word; percent-decoded in URLs), so a key has the same fingerprint wherever it
  appears. 32 bits tell a handful of keys apart and do not help guess a random key.
- The marker has no spaces, so a redacted URL stays one token in a log line. Redacted
  text is for people and logs, never for sending. Every function here is idempotent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote_plus

_SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "authentication", "x-authorization",
    "x-api-key", "api-key", "apikey", "x-goog-api-key", "cookie", "set-cookie",
    "x-auth", "x-auth-token", "x-access-token", "x-amz-security-token", "private-token",
    "x-vault-token", "x-functions-key", "ocp-apim-subscription-key",
})  # fmt: skip
# The credential-name rule: any header whose name holds one of these words carries a
# credential (`X-Custom-Auth`, `x-session-id`, `Cookie`); "tokens" (plural) is a count of
# LLM tokens (`x-ratelimit-remaining-tokens`), not a credential.
_CREDENTIAL_WORDS = r"auth|token(?!s)|key|secret|session|cookie|passw"
_CREDENTIAL_WORD_RE = re.compile(_CREDENTIAL_WORDS)
# Nonces, ids and challenges that only look like credentials, and help when debugging.
_PUBLIC_HEADERS = frozenset({
    "idempotency-key", "x-idempotency-key", "sec-websocket-key", "www-authenticate",
    "proxy-authenticate",
})  # fmt: skip

_SECRET_PARAMS = frozenset({
    "key", "api_key", "apikey", "x_api_key", "x_goog_api_key", "token", "access_token",
    "refresh_token", "id_token", "auth", "authorization", "sig", "signature", "secret",
    "client_secret", "password", "passwd", "pwd", "jwt", "session", "sessionid",
})  # fmt: skip
_SECRET_PARAM_SUFFIXES = ("_key", "_token", "_secret", "_password", "_signature", "apikey")
_PUBLIC_PARAMS = frozenset({
    "page_token", "next_page_token", "pagetoken", "next_token", "nexttoken",
    "continuation_token", "idempotency_key", "cache_key",
})  # fmt: skip

_SCHEMES = (
    "Bearer", "Basic", "Digest", "Token", "Bot", "Key", "ApiKey", "OAuth", "Negotiate",
    "NTLM", "DPoP", "MAC", "Hawk", "AWS4-HMAC-SHA256", "GoogleLogin", "SSWS",
)  # fmt: skip
_PUBLIC_PREFIXES = (
    "sk-", "sk_", "rk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "AIza", "xoxb", "xoxp",
    "xoxa", "xoxr", "xoxs", "hf_", "gsk_", "r8_", "pplx", "eyJ",
)  # fmt: skip
_PREFIX_MIN_SECRET = 20  # chars: below this even a public prefix is much of the value

_MARK = r"(?:[\w-]{0,4}…)?\[redacted:sha256:[0-9a-f]{8}\]"
_MARK_RE = re.compile(_MARK)
_SCHEME_RX = "|".join(re.escape(s) for s in _SCHEMES)
_SCHEME_RE = re.compile(rf"(\s*(?:{_SCHEME_RX})\s+)(\S.*)", re.I | re.S)


def fingerprint(secret: str, length: int = 8) -> str:
    """Return the first length (hex digits) of sha256(secret): a stable, non-reversible id."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def is_secret_header(name: str) -> bool:
    """Whether a header of this name carries a credential (case-insensitive): its name
    holds auth, token, key, secret, session, cookie or passw(ord)."""
    n = name.strip().lower().replace("_", "-")
    if n in _PUBLIC_HEADERS or n.startswith(":"):  # ':authority' is HTTP/2's Host
        return False
    return n in _SECRET_HEADERS or _CREDENTIAL_WORD_RE.search(n) is not None


def is_secret_param(name: str) -> bool:
    """Whether a query (or form) parameter of this name carries a credential."""
    n = name.strip().lower().replace("-", "_")
    if n in _PUBLIC_PARAMS:
        return False
    return n in _SECRET_PARAMS or n.endswith(_SECRET_PARAM_SUFFIXES)


def _mask(secret: str) -> str:
    """The marker for one secret (no scheme word): public prefix, ellipsis, fingerprint."""
    if _MARK_RE.fullmatch(secret):
        return secret
    prefix = ""
    if len(secret) >= _PREFIX_MIN_SECRET:
        prefix = next((p for p in _PUBLIC_PREFIXES if secret.startswith(p)), "")
    marker = f"[redacted:sha256:{fingerprint(secret)}]"
    return f"{prefix}…{marker}" if prefix else marker


def _mask_cookie(pair: str) -> str:
    """Mask the value of one `name=value` cookie, keeping its name and spacing."""
    name, eq, value = pair.partition("=")
    if not eq:
        return pair if not pair.strip() else _mask_keep_space(pair)
    return f"{name}={_mask_keep_space(value)}" if value.strip() else pair


def _mask_keep_space(value: str) -> str:
    stripped = value.strip()
    start = value.index(stripped[0])
    return value[:start] + _mask(stripped) + value[start + len(stripped) :]


def redact_value(name: str, value: str) -> str:
    """Redact the value of a secret header named name (cookies keep their names)."""
    if not value.strip():
        return value
    n = name.strip().lower()
    if n == "cookie":
        return ";".join(_mask_cookie(p) for p in value.split(";"))
    if n == "set-cookie":  # only the first pair is the cookie; the rest are attributes
        first, sep, attributes = value.partition(";")
        return _mask_cookie(first) + sep + attributes
    if m := _SCHEME_RE.fullmatch(value):
        return m[1] + _mask_keep_space(m[2])
    return _mask_keep_space(value)


_URL_HEADERS = frozenset({"referer", "location", "content-location"})


def redact_headers(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the header pairs with every credential replaced by its redaction marker."""
    out = []
    for name, value in pairs:
        if is_secret_header(name):
            value = redact_value(name, value)
        elif name.strip().lower() in _URL_HEADERS:
            value = redact_url(value)
        else:
            value = _redact_shapes(value)
        out.append((name, value))
    return out


# --- URLs ----------------------------------------------------------------------------

# RFC 3986, appendix B: always matches, so nothing here can fail on a malformed URL.
_URL_RE = re.compile(r"(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?", re.S)


def _redact_params(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and value and is_secret_param(unquote_plus(name)) and not _MARK_RE.fullmatch(value):
            part = f"{name}={_mask(unquote_plus(value))}"
        parts.append(part)
    return "&".join(parts)


def _redact_authority(authority: str) -> str:
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return authority
    user, colon, password = userinfo.partition(":")
    if colon and password:
        userinfo = f"{user}:{_mask(unquote_plus(password))}"
    elif not colon and len(user) >= 16:  # a token used as the user name (git style)
        userinfo = _mask(unquote_plus(user))
    return f"{userinfo}@{host}"


def redact_url(url: str) -> str:
    """Return url with userinfo passwords and key-like query/fragment parameters redacted."""
    m = _URL_RE.fullmatch(url)
    if m is None:  # unreachable with the pattern above; kept so a change can't leak
        return redact_text(url)
    scheme, authority, path, query, fragment = m.groups()
    out = f"{scheme}:" if scheme is not None else ""
    if authority is not None:
        out += "//" + _redact_authority(authority)
    out += path
    if query is not None:
        out += "?" + _redact_params(query)
    if fragment is not None:  # OAuth's implicit flow puts access_token here
        out += "#" + (_redact_params(fragment) if "=" in fragment else fragment)
    return _redact_shapes(out)


# --- free text -----------------------------------------------------------------------


def _name_rx(exact: Iterable[str], suffixes: Iterable[str], extra: str = "") -> str:
    """A regex for names matched by is_secret_*: '-' and '_' interchangeable."""

    def flex(s: str) -> str:
        return re.escape(s).replace(r"\-", "[-_]").replace("_", "[-_]")

    alts = sorted((flex(e) for e in exact), key=len, reverse=True)
    alts += [rf"[\w-]*{flex(s)}" for s in suffixes]
    return "(?:" + "|".join(alts + ([extra] if extra else [])) + ")"


_HEADER_NAME = _name_rx(_SECRET_HEADERS, (), rf"[\w-]*(?:{_CREDENTIAL_WORDS})[\w-]*")
_PARAM_NAME = _name_rx(_SECRET_PARAMS, _SECRET_PARAM_SUFFIXES)
_ANY_NAME = f"(?:{_HEADER_NAME}|{_PARAM_NAME})"
_SCHEMED_MARK = rf"(?:(?:{_SCHEME_RX})\s+)?{_MARK}"

# 'authorization': 'Bearer x'   "api_key":"x"   (b'cookie', b'a=1')   -- reprs and JSON
_QUOTED_PAIR_RE = re.compile(
    rf"""(?P<q1>['"])(?P<name>{_ANY_NAME})(?P=q1)\s*[:,=]\s*b?"""
    r"""(?:"(?P<dq>(?:\\.|[^"\\])*)"|'(?P<sq>(?:\\.|[^'\\])*)')""",
    re.I,
)
# Authorization: Bearer x    api_key: x    -- the rest of the line is the value
_HEADER_LINE_RE = re.compile(
    rf"(?<![\w-])(?P<name>{_ANY_NAME})[ \t]*:[ \t]*(?P<value>[^\r\n]*)", re.I
)
# ?key=x&   token=x   authorization=Bearer x
_PARAM_RE = re.compile(
    rf"(?<![\w.-])(?P<name>{_PARAM_NAME})=(?P<value>{_SCHEMED_MARK}"
    rf"|(?:(?:{_SCHEME_RX})\s+)?[^\s&'\"<>,;#]+)",
    re.I,
)
_BEARER_RE = re.compile(
    rf"(?<![\w-])(?P<scheme>Bearer\s+)(?P<value>{_MARK}|[\w.~+/=-]{{8,}})", re.I
)
_USERINFO_RE = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/?#@:]*:)(?P<value>[^\s/?#@]+)@", re.I
)
_SHAPES_RE = re.compile(
    r"(?<![\w-])(?:"
    r"sk-[\w-]{16,}"  # OpenAI, Anthropic (sk-ant-), DeepSeek, ...
    r"|sk_(?:live|test)_\w{16,}|rk_(?:live|test)_\w{16,}"  # Stripe
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}"  # GitHub
    r"|AIza[\w-]{30,}"  # Google
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|glpat-[\w-]{20,}|hf_[A-Za-z0-9]{30,}|gsk_[A-Za-z0-9]{20,}|r8_[A-Za-z0-9]{30,}"
    r"|eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]*"  # a JWT
    r")"
)


def _redact_shapes(text: str) -> str:
    return _SHAPES_RE.sub(lambda m: _mask(m[0]), text)


def replace_key_shapes(text: str, replace: Callable[[str], str]) -> str:
    """text with every well-known API-key shape (sk-…, AIza…, ghp_…, a JWT, …) replaced by
    replace(key): how a key in a URL path stays out of cache keys, listings and exports."""
    return _SHAPES_RE.sub(lambda m: replace(m[0]), text)


def _quoted_pair(m: re.Match[str]) -> str:
    name = m["name"]
    if not (is_secret_header(name) or is_secret_param(name)):
        return m[0]
    value = m["dq"] if m["dq"] is not None else m["sq"]
    start, end = m.span("dq") if m["dq"] is not None else m.span("sq")
    base = m.start()
    redacted = redact_value(name, value) if value else value
    return m[0][: start - base] + redacted + m[0][end - base :]


def _header_line(m: re.Match[str]) -> str:
    name, value = m["name"], m["value"]
    if not (is_secret_header(name) or is_secret_param(name)) or not value.strip():
        return m[0]
    return m[0][: m.start("value") - m.start()] + redact_value(name, value)


def _param(m: re.Match[str]) -> str:
    if not is_secret_param(m["name"]):
        return m[0]
    return f"{m['name']}={redact_value('authorization', m['value'])}"


def redact_text(text: str) -> str:
    """Redact credentials in a free log line: header fragments, bearer tokens, key shapes."""
    text = _QUOTED_PAIR_RE.sub(_quoted_pair, text)
    text = _HEADER_LINE_RE.sub(_header_line, text)
    text = _PARAM_RE.sub(_param, text)
    text = _BEARER_RE.sub(lambda m: m["scheme"] + _mask(m["value"]), text)
    text = _USERINFO_RE.sub(lambda m: f"{m['head']}{_mask(m['value'])}@", text)
    return _redact_shapes(text)
