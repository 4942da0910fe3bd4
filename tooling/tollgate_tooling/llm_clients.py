"""The providers' official SDKs as clients of the gateway's LLM routes.

Each client sends the API key where its SDK always does (``Authorization:
Bearer`` for OpenAI, ``x-api-key`` for Anthropic, ``x-goog-api-key`` for
Gemini) and signs every request's exact body in ``X-Auth-Token`` from an
httpx request hook: the recipes of docs/METERING.md ("Calling through an
SDK"), as the tests run them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable

import anthropic
import jwt
import openai
from google import genai
from google.genai import types


def signer(secret: str, ttl: int = 60) -> Callable:
    """An httpx request hook that adds ``X-Auth-Token`` for the body sent."""

    def sign(request) -> None:
        request.read()  # the exact bytes the SDK sends
        now = int(time.time())
        claims = {"iat": now, "exp": now + ttl,
                  "body_sha256": hashlib.sha256(request.content).hexdigest()}
        request.headers["X-Auth-Token"] = jwt.encode(claims, secret, algorithm="HS256")

    return sign


def openai_client(gateway: str, key: str, secret: str) -> openai.OpenAI:
    hook = signer(secret)
    return openai.OpenAI(
        base_url=f"{gateway}/v1", api_key=key, max_retries=0,
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [hook]}))


def anthropic_client(gateway: str, key: str, secret: str) -> anthropic.Anthropic:
    hook = signer(secret)
    return anthropic.Anthropic(
        base_url=gateway, api_key=key, max_retries=0,
        http_client=anthropic.DefaultHttpxClient(event_hooks={"request": [hook]}))


def gemini_client(gateway: str, key: str, secret: str) -> genai.Client:
    hook = signer(secret)
    return genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=gateway, api_version="v1beta",
        client_args={"event_hooks": {"request": [hook]}}))
