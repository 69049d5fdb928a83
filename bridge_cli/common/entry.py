"""The stored form of a cached response (an Entry) and its codec, shared by engine/cache.py,
which decides what to store, and store/responses.py, which keeps it.

The reader is strict: whatever reaches it (a cache entry, a cassette, a line of `bridge cache
import`) is either a well-formed answer bridge can serve as it is, or refused as corrupt.
Header names are tokens, values hold no control character (CR, LF, NUL: no header can be
injected), the status is an HTTP status, numbers are finite, sizes are bounded. What a
stored answer must not carry (hop-by-hop headers, a Content-Length that disagrees with the
body, bridge's own headers) is dropped on the way in and out, never served. Bodies are
base64 when stored; an export writes a UTF-8 body as text, and the reader takes both.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge_cli.common.jsondoc import json_object
from bridge_cli.common.redact import redact_headers, redact_text

FORMAT = 1  # of a stored entry; bump on an incompatible change (old entries become misses)

# Per-response headers and hop-by-hop headers (RFC 9110 7.6.1): never stored, never replayed.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                        "upgrade"})
SKIP_STORED_HEADERS = HOP_BY_HOP | {"set-cookie", "date", "age"}

MAX_BODY = 2**30  # bytes of one stored body (a stream's events together): 1 GiB
MAX_HEADERS = 512  # header fields of one answer
MAX_HEADER_BYTES = 256 * 2**10  # names and values together
MAX_EVENTS = 1_000_000  # events of one stored stream
MAX_PARTS_DEPTH = 6  # nesting of the key parts (a query pair sits at depth 3)
MAX_PARTS_ITEMS = 10_000  # values in the key parts, all levels together
MAX_TEXT = 64 * 2**10  # characters of the route, and of one string in the key parts
MAX_ABOUT = 200  # characters of the model and of the prompt's first words in `about`

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}"  # RFC 9110 5.6.2
_TOKEN_RE = re.compile(_TOKEN)
_NAMES_RE = re.compile(rf"(?:{_TOKEN}(?:\n{_TOKEN})*)?")  # names joined by LF
# Visible latin-1, space and HTAB (RFC 9110 5.5): no CR, LF, NUL or other control, nothing
# bridge could not send. Joined values are separated by LF, which no value may hold.
_VALUE = r"\t\x20-\x7e\x80-\xff"
_VALUES_RE = re.compile(rf"[{_VALUE}\n]*")
_VALUE_RE = re.compile(rf"[{_VALUE}]*")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")


class EntryError(ValueError):
    """A stored or imported entry that bridge will not serve; str() says why."""


@dataclass
class Entry:
    """A stored answer. Times: epoch seconds; events: (offset seconds, bytes) for streams."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stored_at: float
    parts: dict
    route: str
    events: list[tuple[float, bytes]] | None = None
    vary: list[str] | None = None  # set on a first-level record that points to second level
    about: dict | None = None  # what the request asked (describe_request), for listings

    def to_json(self) -> dict:
        """The stored JSON form, tagged with FORMAT; bytes as base64."""
        doc = {
            "format": FORMAT,
            "status": self.status,
            "headers": [[k, v] for k, v in self.headers],
            "body": base64.b64encode(self.body).decode(),
            "stored_at": self.stored_at,
            "parts": self.parts,
            "route": self.route,
            "events": None if self.events is None else
            [[round(t, 4), base64.b64encode(b).decode()] for t, b in self.events],
            "vary": self.vary,
        }
        if self.about is not None:
            doc["about"] = self.about
        return doc

    def to_export(self) -> dict:
        """The form `bridge cache export` writes: to_json, but a body (and a stream's events)
        that is UTF-8 text as `body_text` (`events_text`), so a cassette reads in a review;
        decode_entry gives back the same bytes."""
        out = {}
        for k, v in self.to_json().items():
            if k == "body" and (text := _utf8(self.body)) is not None:
                k, v = "body_text", text
            elif k == "events" and self.events and None not in (
                    texts := [_utf8(b) for _, b in self.events]):
                k, v = "events_text", [[round(t, 4), x]
                                       for (t, _), x in zip(self.events, texts, strict=True)]
            out[k] = v
        return out

    @property
    def size(self) -> int:
        """The body's length in bytes."""
        return len(self.body)


def storable_headers(headers: Iterable[tuple[str, str]], body: bytes) -> list[tuple[str, str]]:
    """The headers a stored answer keeps: no hop-by-hop, per-response or bridge header, and
    one Content-Length: the body's length, or (an empty body: HEAD) the number it said."""
    kept, length = [], None
    for k, v in headers:
        n = k.lower()
        if n == "content-length":
            if length is None and (body or _DIGITS_RE.fullmatch(v.strip())):
                length = (k, str(len(body)) if body else v.strip())
        elif not (n in SKIP_STORED_HEADERS or n.startswith(("proxy-", "x-bridge-"))):
            kept.append((k, v))
    return kept + [length] if length else kept


def _utf8(data: bytes) -> str | None:
    """`data` as text when it is valid UTF-8 (it then encodes back to the same bytes)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def make_entry(status: int, headers: Iterable[tuple[str, str]], body: bytes, now: float,
               parts: dict, route: str, events: list[tuple[float, bytes]] | None = None,
               about: dict | None = None) -> Entry:
    """An entry of what the upstream answered, without per-response and bridge headers, and
    with the value of every credential-named header redacted (cassettes are committed)."""
    kept = redact_headers(storable_headers(headers, body))
    return Entry(status, kept, body, now, parts, route, events, about=about)


def vary_record(names: list[str], now: float, parts: dict, route: str) -> Entry:
    """A first-level record saying which request headers pick the second-level entry."""
    return Entry(0, [], b"", now, parts, route, vary=names)


def parse_entry(obj: Any) -> Entry | None:
    """The Entry in a stored JSON value, or None when it is missing, corrupt or of another
    format (a broken entry is a miss, never a crash or a wrong answer)."""
    try:
        return decode_entry(obj)
    except EntryError:
        return None


def decode_entry(obj: Any) -> Entry:
    """The Entry in a stored JSON value; EntryError (one line: which field, what is wrong)
    when bridge would not serve it. What `bridge cache import` accepts, and nothing else."""
    if not isinstance(obj, dict):
        raise EntryError("an entry is a JSON object")
    if type(obj.get("format")) is not int or obj["format"] != FORMAT:
        raise EntryError(f"not an entry of format {FORMAT}")
    for name in ("status", "headers", "stored_at", "parts", "route"):
        if name not in obj:
            raise EntryError(f"no {name!r}")
    vary = _vary(obj.get("vary"))
    body = _body(obj)
    if "events_text" in obj and obj.get("events") is not None:
        raise EntryError("both 'events' and 'events_text'")
    events = (_events(obj.get("events"), _base64) if "events_text" not in obj
              else _events(obj["events_text"], _text_bytes))
    return Entry(
        status=_status(obj["status"], vary is not None),
        headers=storable_headers(_headers(obj["headers"]), body),
        body=body,
        stored_at=_number(obj["stored_at"], "stored_at"),
        parts=_parts(obj["parts"]),
        route=_text(obj["route"], "route"),
        events=events,
        vary=vary,
        about=_about(obj.get("about")),
    )


# --- the fields ----------------------------------------------------------------------------


def _status(value: Any, is_vary_record: bool) -> int:
    if type(value) is not int:
        raise EntryError(f"status {value!r} is not an integer")
    if not (100 <= value <= 599 or (is_vary_record and value == 0)):
        raise EntryError(f"status {value} is not an HTTP status (100-599)")
    return value


def _number(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise EntryError(f"{what} {value!r} is not a finite number of seconds")
    return float(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise EntryError(f"{what} is not a string (of at most {MAX_TEXT} characters)")
    return value


def _base64(value: Any, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > (limit + 2) // 3 * 4:
        raise EntryError(f"{what} is not base64 of at most {limit} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EntryError(f"{what} is not valid base64") from None


def _text_bytes(value: Any, what: str, limit: int) -> bytes:
    """The UTF-8 bytes of an exported text body (`body_text`, an event of `events_text`)."""
    if not isinstance(value, str) or len(value) > limit:
        raise EntryError(f"{what} is not text of at most {limit} bytes")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800): no bytes would give this text
        raise EntryError(f"{what} is not valid Unicode text") from None
    if len(data) > limit:
        raise EntryError(f"{what} is not text of at most {limit} bytes")
    return data


def _body(obj: dict) -> bytes:
    """The body: base64 `body` (stored, binary), or `body_text` (exported text); one of them."""
    if ("body" in obj) == ("body_text" in obj):
        raise EntryError("no 'body'" if "body" not in obj else "both 'body' and 'body_text'")
    if "body" in obj:
        return _base64(obj["body"], "body", MAX_BODY)
    return _text_bytes(obj["body_text"], "body_text", MAX_BODY)


def _headers(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list) or len(value) > MAX_HEADERS:
        raise EntryError(f"headers is not a list of at most {MAX_HEADERS} [name, value] pairs")
    try:  # every hit reads its headers here: one pass in C for all of them, then the why
        if not all(type(p) is list for p in value):
            raise TypeError
        pairs = [(k, v) for k, v in value]
        names, values = "\n".join([k for k, _ in pairs]), "\n".join([v for _, v in pairs])
    except (TypeError, ValueError):
        raise EntryError("a header is not a [name, value] pair of strings") from None
    if not (_NAMES_RE.fullmatch(names) and _VALUES_RE.fullmatch(values)):
        for name, val in pairs:
            if not _TOKEN_RE.fullmatch(name):
                raise EntryError(f"header name {name[:40]!r} is not an HTTP token")
            if not _VALUE_RE.fullmatch(val):
                raise EntryError(f"header {name!r}: its value holds a control character "
                                 "(CR, LF, NUL, …) or a character HTTP can't carry")
    if len(names) + len(values) > MAX_HEADER_BYTES:
        raise EntryError(f"headers are larger than {MAX_HEADER_BYTES} bytes")
    return pairs


def _events(value: Any, decode) -> list[tuple[float, bytes]] | None:
    """A stream's events: [offset, base64] pairs (`decode`: _base64), or [offset, text]
    pairs of an export's `events_text` (`decode`: _text_bytes)."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_EVENTS:
        raise EntryError(f"events is not a list of at most {MAX_EVENTS} [offset, data]")
    out, size = [], 0
    for ev in value:
        if not (isinstance(ev, list) and len(ev) == 2):
            raise EntryError("an event is not an [offset, data] pair")
        data = decode(ev[1], "an event", MAX_BODY)
        size += len(data)
        out.append((_number(ev[0], "an event's offset"), data))
    if size > MAX_BODY:
        raise EntryError(f"events are larger than {MAX_BODY} bytes")
    return out


def _vary(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_HEADERS or not all(
            isinstance(v, str) and _TOKEN_RE.fullmatch(v) for v in value):
        raise EntryError("vary is not a list of header names")
    return list(value)


def _parts(value: Any) -> dict:
    """The key parts: an object of strings, lists and objects (bounded nesting); the parts
    a listing shows (path, query) of the shapes it expects."""
    if not isinstance(value, dict):
        raise EntryError("parts is not an object")
    _check_json(value, MAX_PARTS_DEPTH, [MAX_PARTS_ITEMS])
    for name in ("namespace", "method", "path", "host", "body"):
        if name in value and not isinstance(value[name], str):
            raise EntryError(f"parts.{name} is not a string")
    query = value.get("query", [])
    if not isinstance(query, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
            for p in query):
        raise EntryError("parts.query is not a list of [name, value] pairs")
    return value


def _check_json(value: Any, depth: int, budget: list[int]) -> None:
    """Strings, finite numbers, booleans, null, lists and objects with string keys, nested
    at most `depth` deep, `budget[0]` values in all."""
    budget[0] -= 1
    if depth < 0 or budget[0] < 0:
        raise EntryError(f"parts are nested deeper than {MAX_PARTS_DEPTH} or hold more than "
                         f"{MAX_PARTS_ITEMS} values")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise EntryError(f"a part is longer than {MAX_TEXT} characters")
    elif isinstance(value, float) and not math.isfinite(value):
        raise EntryError("a part is not a finite number")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise EntryError("parts have a key that is not a string")
            _check_json(v, depth - 1, budget)
    elif isinstance(value, list):
        for v in value:
            _check_json(v, depth - 1, budget)
    elif value is not None and not isinstance(value, int | bool):
        raise EntryError("a part is not JSON")


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _about(value: Any) -> dict | None:
    if value is None:
        return None
    if not (isinstance(value, dict) and set(value) <= {"model", "prompt"} and all(
            isinstance(v, str) and len(v) <= MAX_ABOUT and not _CONTROL_RE.search(v)
            for v in value.values())):
        raise EntryError("about is not an object of 'model' and 'prompt', one line of at "
                         f"most {MAX_ABOUT} characters each")
    return dict(value)


# --- what a request asked, for listings ----------------------------------------------------

_LLM_INPUTS = ("messages", "input", "contents")  # chat/Anthropic, Responses/embeddings, Gemini
_PATH_MODEL_RE = re.compile(r"/models/([^/:?]+)")  # Gemini names the model in the path
MAX_DESCRIBED = 2**20  # bytes of a request body parsed to describe it (on the event loop)


def describe_request(body: bytes, path: str = "") -> dict | None:
    """What an LLM request asks: {"model", "prompt": the first words of its last user
    prompt, one line, API keys hidden}; None for a request that is not one."""
    doc = json_object(body, MAX_DESCRIBED)
    if doc is None:
        return None
    model = doc.get("model")
    if not isinstance(model, str):
        found = _PATH_MODEL_RE.search(path)
        model = found.group(1) if found else None
    inputs = next((doc[k] for k in _LLM_INPUTS if k in doc), None)
    if not model or inputs is None:
        return None
    about = {"model": _one_line(model)}
    prompt = _one_line(_last_user_text(inputs))
    return about | ({"prompt": prompt} if prompt else {})


def _last_user_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    for item in reversed(value) if isinstance(value, list) else ():
        if isinstance(item, str):  # embeddings' list of inputs
            return item
        if isinstance(item, dict) and item.get("role", "user") == "user":
            content = item.get("content", item.get("parts"))
            if isinstance(content, str):
                return content
            texts = [p["text"] for p in content if isinstance(p, dict)
                     and isinstance(p.get("text"), str)] if isinstance(content, list) else []
            if texts:
                return " ".join(texts)
    return ""


def _one_line(text: str) -> str:
    """`text` on one line, credentials redacted, at most MAX_ABOUT characters."""
    text = redact_text(" ".join(_CONTROL_RE.sub(" ", text[:4 * MAX_ABOUT]).split()))
    return text if len(text) <= MAX_ABOUT else text[:MAX_ABOUT - 1] + "…"
