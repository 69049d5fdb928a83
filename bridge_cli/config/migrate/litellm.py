"""Import a LiteLLM proxy config.yaml: each model group becomes a bridge route.

What is read: `model_list` (each entry's `model_name` and `litellm_params`: model,
api_base, api_key, timeout, weight, sampling params), `router_settings` (fallbacks,
num_retries, timeout, routing_strategy, cooldown_time) and `litellm_settings` (cache,
cache_params.ttl, fallbacks, num_retries, request_timeout). Everything else is listed.
"""

from __future__ import annotations

from typing import Any

from bridge_cli.config.migrate.chain import Note, Upgraded
from bridge_cli.config.migrate.common import (
    env_name,
    env_ref,
    key_header,
    plain,
    port_picker,
    seconds,
    to_name,
)
from bridge_cli.config.units import parse_duration
from bridge_cli.errors import ConfigError

# Where a provider prefix sends calls when `api_base` is not given.
BASE_URLS = {
    "openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com", "groq": "https://api.groq.com/openai",
    "mistral": "https://api.mistral.ai", "deepseek": "https://api.deepseek.com",
    "openrouter": "https://openrouter.ai/api", "together_ai": "https://api.together.xyz",
    "ollama": "http://127.0.0.1:11434", "ollama_chat": "http://127.0.0.1:11434",
}
# genai-prices provider ids, for `spend: {provider: ...}`.
SPEND_IDS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google",
             "azure": "azure", "groq": "groq", "mistral": "mistral", "deepseek": "deepseek"}
# Providers that speak the OpenAI API: LiteLLM translates for the others, bridge doesn't.
OPENAI_LIKE = {"openai", "groq", "mistral", "deepseek", "openrouter",
               "together_ai", "ollama", "ollama_chat", "hosted_vllm", "lm_studio"}
PARAMS = ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty",
          "stop", "seed")
READ_PARAMS = ("model", "api_base", "api_key", "timeout", "weight", *PARAMS)
STRATEGIES = {"simple-shuffle": "round_robin", "latency-based-routing": "least_latency"}
ROUTER_KEYS = ("fallbacks", "num_retries", "timeout", "routing_strategy", "cooldown_time")
SETTINGS_KEYS = ("cache", "cache_params", "fallbacks", "num_retries", "request_timeout")


def import_litellm(doc: Any) -> Upgraded:
    """The version 2 document of a LiteLLM config.yaml, with a note for every change and
    for everything that has no equivalent in bridge."""
    doc = plain(doc)
    if not isinstance(doc, dict) or not isinstance(doc.get("model_list"), list):
        raise ConfigError("not a LiteLLM config: expected `model_list:` with a list of "
                          "{model_name, litellm_params} entries")
    notes: list[Note] = []
    router = _section(doc, "router_settings", notes)
    settings = _section(doc, "litellm_settings", notes)
    for key in doc:
        if key not in ("model_list", "router_settings", "litellm_settings"):
            notes.append(Note("unsupported", f"{key} is LiteLLM's own (server, keys, "
                              "database): not carried over", key))
    groups = _groups(doc["model_list"], notes)
    fallbacks = _fallbacks(router.get("fallbacks") or settings.get("fallbacks") or [], notes)
    shared = _shared_settings(router, settings, notes)
    pick = port_picker()
    routes = [_route(name, deployments, groups, fallbacks.get(name, []), router, shared,
                     notes, pick) for name, deployments in groups.items()]
    seen: set[tuple[str, str, str]] = set()  # a deployment in two routes is noted once
    unique = [n for n in notes if (n.kind, n.where, n.text) not in seen
              and not seen.add((n.kind, n.where, n.text))]
    return Upgraded({"version": 2, "routes": routes}, 0, unique)


def _section(doc: dict, key: str, notes: list[Note]) -> dict:
    section = doc.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{key}: expected a mapping")
    known = ROUTER_KEYS if key == "router_settings" else SETTINGS_KEYS
    for name in section:
        if name not in known:
            notes.append(Note("unsupported", f"{key}.{name} has no equivalent in bridge",
                              f"{key}.{name}"))
    return section


def _groups(model_list: list, notes: list[Note]) -> dict[str, list[dict]]:
    """model_name -> its deployments' litellm_params, in the order first seen."""
    groups: dict[str, list[dict]] = {}
    for i, entry in enumerate(model_list):
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        if not isinstance(params, dict) or not entry.get("model_name") or not params.get(
                "model"):
            notes.append(Note("dropped", f"model_list[{i}] has no model_name or "
                              "litellm_params.model", f"model_list[{i}]"))
            continue
        for key in entry:
            if key not in ("model_name", "litellm_params"):
                notes.append(Note("unsupported", f"{key} of {entry['model_name']} is "
                                  "LiteLLM's own: not carried over", f"model_list[{i}].{key}"))
        groups.setdefault(str(entry["model_name"]), []).append(params | {"_index": i})
    return groups


def _fallbacks(raw: Any, notes: list[Note]) -> dict[str, list[str]]:
    """fallbacks as {group: [groups tried after it]}, from LiteLLM's list of mappings."""
    items = raw if isinstance(raw, list) else [raw]
    out: dict[str, list[str]] = {}
    for item in items:
        if not isinstance(item, dict):
            notes.append(Note("dropped", f"fallbacks entry {item!r} is not a mapping",
                              "fallbacks"))
            continue
        for name, targets in item.items():
            out.setdefault(str(name), []).extend(
                str(t) for t in (targets if isinstance(targets, list) else [targets]))
    return out


def _route(name: str, deployments: list[dict], groups: dict[str, list[dict]],
           fallbacks: list[str], router: dict, shared: dict, notes: list[Note],
           pick) -> dict:
    rname = to_name(name)
    route: dict[str, Any] = {"name": rname, "listen": pick()}
    notes.append(Note("moved", f"model group '{name}' became route '{rname}', listening on "
                      f"{route['listen']} (point the app at http://{route['listen']}/v1)",
                      f"model_list[{name}]", f"routes[{rname}]"))
    upstreams: list[dict] = []
    providers: set[str] = set()
    for group, params_list in [(name, deployments)] + [
            (f, groups.get(f, [])) for f in fallbacks]:
        if group != name and not params_list:
            notes.append(Note("dropped", f"fallback '{group}' of '{name}' names no model "
                              "group", "fallbacks"))
        for params in params_list:
            upstream, provider = _upstream(rname, params, {u["name"] for u in upstreams}, notes)
            upstreams.append(upstream)
            providers.add(provider)
        if group != name and params_list:
            notes.append(Note("moved", f"fallback {name} -> {group} became more upstreams of "
                              f"route '{rname}', tried in order", "fallbacks",
                              f"routes[{rname}].upstreams"))
    strategy = _strategy(rname, len(deployments), bool(fallbacks), router, notes)
    if strategy:
        route["strategy"] = strategy
    route["upstreams"] = upstreams
    times = [seconds(d["timeout"]) for d in deployments if seconds(d.get("timeout"))]
    if times := [t for t in [shared.get("timeout"), *times] if t]:
        route["timeout"] = max(times, key=_secs)
    route.update({k: v for k, v in shared.items() if k != "timeout"})
    spend = {SPEND_IDS.get(p) for p in providers}
    if len(spend) == 1 and None not in spend:
        route["spend"] = {"provider": spend.pop()}
    elif providers:
        notes.append(Note("unsupported", f"route '{rname}' mixes providers "
                          f"({', '.join(sorted(providers))}): bridge prices a route with one "
                          "provider's prices, so no `spend:` was set", f"model_list[{name}]"))
    return route


def _upstream(rname: str, params: dict, taken: set[str],
              notes: list[Note]) -> tuple[dict, str]:
    where = f"model_list[{params['_index']}].litellm_params"
    provider, _, model = str(params["model"]).partition("/")
    if not model:
        provider, model = "openai", provider  # LiteLLM's default for a bare model name
    url = str(params.get("api_base") or BASE_URLS.get(provider, "")).rstrip("/")
    if not url:
        raise ConfigError(f"{where}: no api_base for provider '{provider}', and bridge "
                          "doesn't know its URL: add `api_base:` to the LiteLLM entry")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]  # the app's base URL keeps its /v1; bridge appends paths
    name = to_name(model)
    n = 2
    while name in taken:
        name, n = f"{to_name(model)}-{n}", n + 1
    upstream: dict[str, Any] = {"name": name, "url": url, "model": model}
    if "weight" in params:
        upstream["weight"] = params["weight"]
    key = params.get("api_key")
    variable = env_ref(key) or (env_name(provider, model, "API_KEY") if key
                                else env_name(provider, "API_KEY"))
    upstream["headers"] = key_header(url, variable)
    how = ("read from $" + variable if env_ref(key) or not key
           else f"moved out of the file: export {variable}=<the key>")
    label = f"{provider}/{model}"  # not the route's name: a deployment is noted once
    notes.append(Note("env", f"the key of {label} is {how}", f"{where}.api_key"))
    if sampling := {k: params[k] for k in PARAMS if k in params}:
        upstream["params"] = sampling
    for k in params:
        if k not in READ_PARAMS and k != "_index":
            notes.append(Note("unsupported", f"litellm_params.{k} of {label} has no "
                              "equivalent in bridge", f"{where}.{k}"))
    if provider not in OPENAI_LIKE:
        notes.append(Note("unsupported", f"LiteLLM turns OpenAI-format calls into {provider}'s "
                          "own API (paths, body); bridge forwards requests as they are, so "
                          f"call {label} the way {provider} expects", f"{where}.model"))
    return upstream, provider


def _strategy(rname: str, deployments: int, fallbacks: bool, router: dict,
              notes: list[Note]) -> str | None:
    wanted = router.get("routing_strategy", "simple-shuffle")
    if deployments < 2:
        return None
    if fallbacks:
        notes.append(Note("unsupported", f"route '{rname}' balanced {deployments} deployments "
                          "and had fallbacks; bridge's strategy covers the whole route, so "
                          "they are tried in order", "router_settings.routing_strategy"))
        return None
    if wanted not in STRATEGIES:
        notes.append(Note("unsupported", f"routing_strategy {wanted} has no equivalent; route "
                          f"'{rname}' uses round_robin", "router_settings.routing_strategy"))
    return STRATEGIES.get(wanted, "round_robin")


def _shared_settings(router: dict, settings: dict, notes: list[Note]) -> dict[str, Any]:
    """Route keys that LiteLLM sets for every model group at once."""
    out: dict[str, Any] = {}
    times = [seconds(v) for v in (router.get("timeout"), settings.get("request_timeout"))]
    if times := [t for t in times if t]:
        out["timeout"] = max(times, key=_secs)
        notes.append(Note("moved", f"timeout became timeout: {out['timeout']} on every route",
                          "router_settings.timeout", "routes[].timeout"))
    retries = router.get("num_retries", settings.get("num_retries"))
    if isinstance(retries, int) and not isinstance(retries, bool) and retries > 0:
        out["retry"] = {"attempts": retries + 1, "methods": ["POST"]}
        notes.append(Note("moved", f"num_retries: {retries} became retry.attempts: "
                          f"{retries + 1} with methods: [POST] on every route",
                          "num_retries", "routes[].retry"))
    if seconds(router.get("cooldown_time")):
        out["breaker"] = {"open_for": seconds(router["cooldown_time"])}
        notes.append(Note("moved", "cooldown_time became breaker.open_for on every route",
                          "router_settings.cooldown_time", "routes[].breaker"))
    if settings.get("cache"):
        out["cache"] = _cache(settings.get("cache_params") or {}, notes)
    return out


def _cache(params: Any, notes: list[Note]) -> dict:
    cache: dict[str, Any] = {"methods": ["POST"]}
    if isinstance(params, dict) and seconds(params.get("ttl")):
        cache["ttl"] = seconds(params["ttl"])
    for key in params if isinstance(params, dict) else ():
        if key != "ttl":
            notes.append(Note("unsupported", f"cache_params.{key} has no equivalent: bridge "
                              "keeps its cache on disk, per route", f"cache_params.{key}"))
    notes.append(Note("moved", "litellm_settings.cache became cache on every route (POST "
                      "calls too, keyed on the body)", "litellm_settings.cache",
                      "routes[].cache"))
    return cache


def _secs(duration: str) -> float:
    return parse_duration(duration)
