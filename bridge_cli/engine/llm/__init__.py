"""What bridge knows of LLM providers' wire formats (`llm: openai|anthropic` on a route):
their errors by meaning, their streams event by event, and how a broken stream is
continued with a prefill and spliced back into one answer. Pure: bytes and dicts in and out.
"""
