"""`bridge demo`: fake LLM upstreams, a bridge with every feature on, traffic, a summary.

Everything runs on 127.0.0.1 with no network and no API keys: the upstreams here speak
OpenAI's chat completions with realistic usage, so spend, cache, breakers and drift act on
them as they would on the real API.
"""
