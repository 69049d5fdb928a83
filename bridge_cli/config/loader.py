"""Load a bridge config: YAML -> schema check -> semantic checks -> frozen Config.

Every problem is reported at once, one line each, sorted by line, as
`bridge.yaml:12: routes[0].retry.attempts: expected an integer >= 1, got "three"`, in one
ConfigError whose first line makes sense on its own.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from bridge_cli.config.build import ConfigPath, InvalidConfig, build_config, format_path
from bridge_cli.config.model import Config, Fault
from bridge_cli.config.support import UNENFORCED
from bridge_cli.config.yamlload import MAX_BYTES, YamlDoc, load_yaml, too_big
from bridge_cli.errors import ConfigError, UsageError
from bridge_cli.resources import data_dir

SCHEMA_FILE = "bridge.v2.json"
DEFAULT_SOURCE = "<built-in default>"
DEFAULT_CONFIG_YAML = """\
# bridge's built-in default: the explicit proxy and the control API, no routes.
# Point an app at it with HTTPS_PROXY=http://127.0.0.1:8080 (trusting `bridge ca`), or
# start from a recipe with routes of its own: `bridge init --list`.
version: 2
proxy:
  listen: 127.0.0.1:8080
control:
  listen: 127.0.0.1:8765
routes: []
"""

# What to do with ApiBridge's connectors.yaml (docs/migrate.md).
V1_MIGRATE = ("convert it with `bridge migrate FILE --write` (the old file is kept as "
              "FILE.bak; without --write it only shows the change)")
# A `version: 1` file without connectors has nothing to convert: by hand.
V1_HOW = (
    "set `version: 2` and write each connector as a route under `routes:`, its providers "
    "as `upstreams:` (`bridge init --list` shows ready routes; docs/config.md has every key)"
)


@functools.cache
def schema() -> dict:
    """The config's JSON Schema (schemas/bridge.v2.json)."""
    return json.loads((data_dir("schemas") / SCHEMA_FILE).read_text(encoding="utf-8"))


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def parse_config(text: str, source: str = "<string>", *, base_dir: Path | None = None) -> Config:
    """The validated Config of YAML `text`; `source` names it in messages, `base_dir` is
    where relative file paths in it start (default: the current directory)."""
    return _load(text, source, base_dir)[1]


def raw_config(text: str, source: str = "<string>") -> dict:
    """The config as a plain dict, after every check parse_config makes (for diff, migrate
    and reports that need the keys the user wrote)."""
    return _load(text, source, None)[0]


def load_config(path: str | Path) -> Config:
    """The validated Config of the file at `path`; an unreadable file is a ConfigError."""
    return parse_config(read_config_text(path), str(path), base_dir=Path(path).absolute().parent)


def read_config_text(path: str | Path) -> str:
    """The text of a config file, or a ConfigError that names it and says why not. At most
    MAX_BYTES are read: `bridge validate /dev/zero` ends at once with the size error."""
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ConfigError(too_big(str(path)))
        # Line breaks as read_text() gives them: \r\n and \r become \n.
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: can't read the config file: {exc.strerror}") from None


@functools.cache
def default_config() -> Config:
    """The built-in default: the explicit proxy on 127.0.0.1:8080, control on :8765."""
    return parse_config(DEFAULT_CONFIG_YAML, DEFAULT_SOURCE)


def unenforced_keys(raw: dict) -> list[str]:
    """Dotted paths in `raw` (as "routes[openai].cache") that match a pattern in UNENFORCED."""
    found: set[str] = set()
    for pattern in UNENFORCED:
        found.update(_expand(raw, pattern.split("."), ""))
    return sorted(found)


def _expand(node: Any, steps: list[str], label: str) -> list[str]:
    if not steps:
        return [label]
    step, rest = steps[0], steps[1:]
    key = step.removesuffix("[]")
    if not isinstance(node, dict) or key not in node:
        return []
    child, label = node[key], f"{label}.{key}" if label else key
    if not step.endswith("[]"):
        return _expand(child, rest, label)
    out: list[str] = []
    for i, item in enumerate(child if isinstance(child, list) else []):
        name = item.get("name") if isinstance(item, dict) else None
        out += _expand(item, rest, f"{label}[{name if name is not None else i}]")
    return out


# ---- the pipeline --------------------------------------------------------------------------


def _load(text: str, source: str, base_dir: Path | None) -> tuple[dict, Config]:
    doc = load_yaml(text, source)
    data = doc.data
    if data is None:
        raise ConfigError(f"{source}:1: the config is empty: start it with `version: 2`")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}:1: expected a mapping of keys (version, routes, ...) at "
            f"the top, got {_show(data)}"
        )
    if "version" not in data and "connectors" in data:
        raise ConfigError(f"{source}:1: this is a version 1 config (ApiBridge's "
                          f"connectors.yaml): {V1_MIGRATE.replace('FILE', source)}")
    lines = [
        _line(doc, *problem)
        for error in _validator().iter_errors(data)
        for problem in _schema_problems(error)
    ]
    if not lines:
        try:
            return data, build_config(data, source, base_dir)
        except InvalidConfig as exc:
            lines = [_line(doc, path, path, message) for path, message in exc.problems]
    lines.sort()
    raise ConfigError("\n".join(dict.fromkeys(message for *_, message in lines)))


def _line(doc: YamlDoc, where: ConfigPath, shown: ConfigPath, message: str):
    line, column = doc.where(where)
    prefix = f"{format_path(shown)}: " if shown else ""
    return (line, column, f"{doc.source}:{line}: {prefix}{message}")


def _schema_problems(error: ValidationError) -> list[tuple[ConfigPath, ConfigPath, str]]:
    """(path to find the line of, path to show, message) for one schema error."""
    path: ConfigPath = tuple(error.absolute_path)
    schema_, instance, kind = error.schema, error.instance, error.validator
    if kind == "additionalProperties" and isinstance(instance, dict):
        known = list(schema_.get("properties", {}))
        return [
            ((*path, key), path, f"unknown key '{key}'{_did_you_mean(key, known)}")
            for key in instance
            if key not in known
        ]
    if kind == "required":
        hint = " (add `version: 2` at the top)" if path == () else ""
        return [
            (path, path, f"missing required key '{key}'{hint}")
            for key in error.validator_value
            if key not in instance
        ]
    if "propertyNames" in error.relative_schema_path:
        return [
            (path, path, f"key '{instance}' is not allowed here: expected {_expected(schema_)}")
        ]
    if path == ("version",) and instance == 1:
        return [(path, path, "expected 2, got 1: version 1 is ApiBridge's connectors.yaml, "
                             f"and this file has no connectors to convert; {V1_HOW}")]
    if isinstance(schema_, dict) and "x-message" in schema_:
        return [(path, path, schema_["x-message"].format(got=_show(instance)))]
    if kind == "minItems":
        return [(path, path, f"expected at least {error.validator_value} item(s), got none")]
    if kind == "minProperties":
        keys = ", ".join(schema_.get("properties", {}))
        return [(path, path, f"expected at least one of: {keys}")]
    if kind in ("enum", "const"):
        choices = [str(c) for c in schema_.get("enum", [schema_.get("const")])]
        hint = _did_you_mean(instance, choices) if isinstance(instance, str) else ""
        return [(path, path, f"expected {_expected(schema_)}, got {_show(instance)}{hint}")]
    if kind in ("type", "minimum", "maximum", "exclusiveMinimum", "pattern", "minLength"):
        return [(path, path, f"expected {_expected(schema_)}, got {_show(instance)}")]
    return [(path, path, error.message)]


def _expected(schema_: dict) -> str:
    """What a value of `schema_` looks like, in words ("an integer >= 1")."""
    if "x-expected" in schema_:
        return schema_["x-expected"]
    if "enum" in schema_:
        return "one of " + ", ".join(str(c) for c in schema_["enum"])
    if "const" in schema_:
        return _show(schema_["const"])
    types = schema_.get("type", [])
    words = []
    for type_ in [types] if isinstance(types, str) else types:
        if type_ in ("integer", "number"):
            low, high = schema_.get("minimum"), schema_.get("maximum")
            word = "an integer" if type_ == "integer" else "a number"
            if low is not None and high is not None:
                word += f" from {low} to {high}"
            elif low is not None:
                word += f" >= {low}"
            elif high is not None:
                word += f" <= {high}"
        else:
            word = {
                "string": "a non-empty string" if schema_.get("minLength") else "a string",
                "boolean": "true or false",
                "array": "a list",
                "object": "a mapping",
                "null": "null",
            }[type_]
            if type_ == "string" and "pattern" in schema_:
                word += f" matching {schema_['pattern']}"
        words.append(word)
    return " or ".join(words) or "something else"


def _show(value: Any) -> str:
    """A value as the user would recognise it in a message (JSON-like, short)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---- one fault, from the control API or an x-bridge-fault header ---------------------------


def parse_fault(raw: dict, config: Config) -> Fault:
    """A fault given as config keys (as `chaos.faults[]` takes them), validated like the
    config's own, its route and upstream checked against `config`; UsageError if bad."""
    from bridge_cli.config.build import _Builder  # the config's own fault builder

    if not isinstance(raw, dict):
        raise UsageError("a fault must be a JSON object of config keys (name, route, status, ...)")
    data = {"version": 2, "chaos": {"faults": [raw]}}
    prefix = "chaos.faults[0]"
    problems = []
    for error in _validator().iter_errors(data):
        for _, shown, message in _schema_problems(error):
            where = format_path(shown).removeprefix(prefix).lstrip(".")
            problems.append(f"{where}: {message}" if where else message)
    if not problems:
        builder = _Builder(None)
        fault = builder.fault(raw, ())
        problems = [f"{format_path(p)}: {m}" if p else m for p, m in builder.problems]
    if problems:
        raise UsageError("invalid fault: " + "; ".join(sorted(set(problems))))
    routes = {r.name: r for r in config.routes}
    if fault.route != "*" and fault.route not in routes:
        raise UsageError(f"invalid fault: no route is named '{fault.route}'"
                         + _did_you_mean(fault.route, list(routes))
                         + f" (routes: {', '.join(routes) or 'none'}; or * for every route)")
    if fault.upstream is not None:
        scope = routes.values() if fault.route == "*" else [routes[fault.route]]
        names = [u.name for r in scope for u in r.upstreams]
        if fault.upstream not in names:
            raise UsageError(f"invalid fault: no upstream is named '{fault.upstream}'"
                             + _did_you_mean(fault.upstream, names))
    return fault
