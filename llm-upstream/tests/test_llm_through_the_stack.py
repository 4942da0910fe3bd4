"""The stack (tollgate_tooling.stack, as ``make run`` starts it) routes the
LLM APIs through Envoy and the filter to llm-upstream: an official SDK,
its requests signed as the client contract asks, gets the upstream's
answers, and a stream reaches the client token by token (Envoy buffers
nothing on these routes)."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="module")
def stack(need, tmp_path_factory):
    stack_module = need("tollgate_tooling.stack")
    stack = stack_module.Stack(stack_module.StackConfig.ephemeral(
        tmp_path_factory.mktemp("llm-upstream-stack")))
    try:
        stack.start()
    except stack_module.StackError as err:
        pytest.fail(f"the stack did not start: {err}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop()
    faults = stack.log_faults()
    if faults:
        pytest.fail(need("tollgate_tooling.log_faults").report(faults), pytrace=False)


@pytest.fixture(scope="module")
def key(stack) -> str:
    """A tollgate API key; the SDKs send it in their own header too."""
    return stack.create_key("llm-upstream-test")["key"]


@pytest.fixture()
def signed_client(stack, need, key):
    """An httpx2 client that sends the API key as ``Authorization: Bearer``
    (which every route takes; the SDK's own key header goes, so the request
    has one credential) and an X-Auth-Token for each body."""
    httpx2 = need("httpx2")
    mint_token = need("tollgate_tooling.stack").mint_token

    def sign(request):
        for own in ("x-api-key", "x-goog-api-key"):
            request.headers.pop(own, None)
        request.headers["Authorization"] = f"Bearer {key}"
        request.headers["X-Auth-Token"] = mint_token(stack.config.jwt_secret, request.read())

    with httpx2.Client(event_hooks={"request": [sign]}) as client:
        yield client


def test_an_sdk_stream_passes_through_the_gateway_token_by_token(stack, signed_client, key,
                                                                 openai_sdk, rule, knobs):
    client = openai_sdk.OpenAI(base_url=f"{stack.gateway}/v1", api_key=key,
                               http_client=signed_client, max_retries=0)
    start = time.monotonic()
    arrivals, text, usage = [], "", None
    for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "through the gateway"}],
            stream=True, stream_options={"include_usage": True},
            extra_headers=knobs(reply_tokens=5, token_delay_ms=200)):
        arrivals.append(time.monotonic() - start)
        text += "".join(c.delta.content or "" for c in chunk.choices)
        usage = chunk.usage or usage
    assert text == rule.reply("through the gateway", 5)
    assert usage.completion_tokens == 5 and usage.prompt_tokens == 4
    assert arrivals[-1] >= 1.0 and arrivals[1] < arrivals[-1] - 0.6, arrivals


def test_every_llm_path_reaches_the_upstream(stack, signed_client, key, anthropic_sdk,
                                             openai_sdk, genai):
    openai_client = openai_sdk.OpenAI(base_url=f"{stack.gateway}/v1", api_key=key,
                                      http_client=signed_client, max_retries=0)
    assert openai_client.responses.create(model="m", input="a b").usage.input_tokens == 3
    assert openai_client.embeddings.create(model="m", input="a b").usage.prompt_tokens == 2
    anthropic_client = anthropic_sdk.Anthropic(base_url=stack.gateway, api_key=key,
                                               http_client=signed_client, max_retries=0)
    done = anthropic_client.messages.create(model="m", max_tokens=3,
                                            messages=[{"role": "user", "content": "c"}])
    assert done.stop_reason == "max_tokens"
    module, types, _ = genai
    gemini = module.Client(api_key=key, http_options=types.HttpOptions(
        base_url=stack.gateway, api_version="v1beta", httpx_client=signed_client,
        retry_options=types.HttpRetryOptions(attempts=1)))
    chunks = list(gemini.models.generate_content_stream(model="m", contents="d e"))
    assert chunks[-1].usage_metadata.total_token_count == 3 + 12
