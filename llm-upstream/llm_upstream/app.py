"""The WSGI application: routes each provider's paths to its module, reads
the knobs, answers the ``error`` fault and bad requests in the provider's
error shape, and ``GET /health``.

``gunicorn -c gunicorn.conf.py llm_upstream.app:app`` (README.md).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Callable

from flask import Flask, Response, jsonify, request

from llm_upstream import (anthropic_messages, delivery, errors, gemini, knobs, openai_chat,
                          openai_embeddings, openai_responses)
from llm_upstream.request import BadRequest, Call


@dataclasses.dataclass(frozen=True)
class Provider:
    """What differs between providers outside their APIs' bodies."""

    name: str
    #: The header each answer names the request by (None: none).
    request_id_header: str | None
    error_body: Callable[[int, str, str], dict]


OPENAI = Provider("openai", "x-request-id", lambda status, msg, rid: errors.openai(status, msg))
ANTHROPIC = Provider("anthropic", "request-id", errors.anthropic)
GEMINI = Provider("gemini", None, lambda status, msg, rid: errors.gemini(status, msg))


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    @app.post("/v1/chat/completions")
    def chat_completions():
        return serve(OPENAI, openai_chat.answer)

    @app.post("/v1/responses")
    def responses():
        return serve(OPENAI, openai_responses.answer)

    @app.post("/v1/embeddings")
    def embeddings():
        return serve(OPENAI, openai_embeddings.answer)

    @app.post("/v1/messages")
    def messages():
        return serve(ANTHROPIC, anthropic_messages.answer)

    # v1beta is the path the Gemini API reference documents; the google-genai
    # SDK asks for v1 unless told otherwise. Both answer alike.
    @app.post("/v1beta/models/<path:target>")
    @app.post("/v1/models/<path:target>")
    def gemini_models(target: str):
        model, _, method = target.rpartition(":")
        if method == "generateContent":
            return serve(GEMINI, lambda call: gemini.answer(call, stream=False), model)
        if method == "streamGenerateContent" and request.args.get("alt") == "sse":
            return serve(GEMINI, lambda call: gemini.answer(call, stream=True), model)
        if method == "streamGenerateContent":
            return refuse(GEMINI, 400, "llm-upstream streams streamGenerateContent as "
                          "server-sent events only: add ?alt=sse", uuid.uuid4().hex)
        return refuse(GEMINI, 404, f"no method {method!r} on models (generateContent, "
                      "streamGenerateContent)", uuid.uuid4().hex)

    return app


def refuse(provider: Provider, status: int, message: str, call_id: str) -> Response:
    headers = ({provider.request_id_header: f"req_{call_id}"}
               if provider.request_id_header else {})
    body = provider.error_body(status, message, f"req_{call_id}")
    return Response(delivery.compact(body), status=status, content_type="application/json",
                    headers=headers)


def serve(provider: Provider, answer: Callable[[Call], Response], model: str | None = None):
    call_id = uuid.uuid4().hex
    try:
        wanted = knobs.from_headers(request.headers)
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise BadRequest("the body is not a JSON object")
        if wanted.has("error"):
            return refuse(provider, wanted.error_status,
                          f"llm-upstream: error fault ({wanted.error_status})", call_id)
        model = model or body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
        headers = ({provider.request_id_header: f"req_{call_id}"}
                   if provider.request_id_header else {})
        return answer(Call(body, wanted, model, call_id, headers))
    except (BadRequest, knobs.BadKnob) as err:
        return refuse(provider, 400, str(err), call_id)


app = create_app()
