"""llm-upstream: a deterministic fake LLM provider for tollgate's tests.

It answers the OpenAI Chat Completions, Responses and Embeddings APIs, the
Anthropic Messages API and the Gemini generateContent API in each
provider's own wire format, with text and token counts that follow the
rules of ``rules.py`` (README.md states them), and fault switches chosen
per request by headers (``knobs.py``).
"""
