"""OpenAI Embeddings, through the official ``openai`` SDK straight to llm-upstream."""

from __future__ import annotations

import hashlib
import struct

import pytest


def expected_vector(text: str, dimensions: int = 8) -> list[float]:
    """README's rule: u16 words of SHAKE-256 of the text, each / 32768 - 1."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    return [w / 32768 - 1 for (w,) in struct.iter_unpack("<H", raw)]


@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_vectors_and_usage_follow_the_rules(openai_client, encoding):
    # The SDK asks for base64 unless told otherwise, and decodes it.
    params = {} if encoding == "base64" else {"encoding_format": "float"}
    done = openai_client.embeddings.create(model="any-embedder", input=["a b c", "hello"],
                                           **params)
    assert [d.index for d in done.data] == [0, 1]
    assert done.data[0].embedding == expected_vector("a b c")
    assert done.data[1].embedding == expected_vector("hello")
    assert (done.usage.prompt_tokens, done.usage.total_tokens) == (4, 4)


def test_token_arrays_and_dimensions(openai_client):
    done = openai_client.embeddings.create(model="m", input=[[1, 2, 3], [4]], dimensions=3)
    assert done.data[0].embedding == expected_vector("1 2 3", 3)
    assert done.usage.prompt_tokens == 4


def test_faults(openai_client, openai_sdk, knobs):
    def create(**k):
        return openai_client.embeddings.create(model="m", input="x y", extra_headers=knobs(**k))

    assert create(fault="omit-usage").usage is None
    assert create(fault="bad-usage").usage.prompt_tokens == -2
    with pytest.raises(openai_sdk.RateLimitError):
        create(fault="error")
    with pytest.raises(openai_sdk.APIConnectionError):
        create(fault="abort")
