"""Each provider's error answer, shaped so that its official SDK raises the
exception class it raises for that status (RateLimitError for 429, ...)."""

from __future__ import annotations

#: OpenAI: (error.type, error.code) by status.
OPENAI_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}

#: Anthropic: error.type by status.
ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}

#: Gemini: error.status (google.rpc.Code's name) by HTTP status.
GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def openai(status: int, message: str) -> dict:
    kind, code = OPENAI_KINDS.get(
        status, ("server_error", None) if status >= 500 else ("invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def anthropic(status: int, message: str, request_id: str) -> dict:
    kind = ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def gemini(status: int, message: str) -> dict:
    name = GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": status, "message": message, "status": name, "details": [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": name,
        "domain": "generativelanguage.googleapis.com",
    }]}}
