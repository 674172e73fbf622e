"""OpenAI-style error bodies: `{"error": {"message", "type", "param", "code"}}` with the domain HTTP status.

Domain errors (`runtime.errors`) carry the HTTP status and OpenAI type; this module only shapes the body,
names the parameter in OpenAI's terms, and adds `Retry-After` when the router sent a hint.
"""

from __future__ import annotations

import json
import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from supernode.runtime.errors import InvalidArgumentError, SupernodeError

logger = logging.getLogger(__name__)

# The router names proto fields ("sampling.seed"); OpenAI clients know request parameters.
_PARAM_BY_FIELD = {
    "sampling.seed": "seed",
    "sampling.temperature": "temperature",
    "sampling.top_p": "top_p",
    "sampling.stop_token_ids": "stop_token_ids",
    "sampling.ignore_eos": "ignore_eos",
    "token_ids": "prompt",
}
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]]*): ")
_STATUS_TYPE = {401: "authentication_error", 404: "invalid_request_error", 405: "invalid_request_error"}


class PayloadTooLargeError(InvalidArgumentError):
    """The body is larger than `frontend.max_body_bytes`."""

    http_status = 413

    @property
    def code(self) -> str:
        return "request_too_large"


class ModelNotFoundError(SupernodeError):
    http_status = 404
    openai_type = "invalid_request_error"

    @property
    def code(self) -> str:
        return "model_not_found"


class InvalidApiKeyError(SupernodeError):
    http_status = 401
    openai_type = "authentication_error"

    @property
    def code(self) -> str:
        return "invalid_api_key"


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def router_param(err: SupernodeError, prompt_param: str) -> str | None:
    """The OpenAI parameter an error is about; the router's `prompt` becomes `prompt_param`."""
    field = err.field
    if not field:
        match = _FIELD_PREFIX.match(err.message)
        field = match.group(1) if match else ""
    if field in ("prompt", "token_ids"):
        return prompt_param
    return _PARAM_BY_FIELD.get(field, field) or None


def error_response(err: SupernodeError, param: str | None = None) -> Response:
    """The HTTP response for a domain error (`param` defaults to the error's own field)."""
    body = error_body(err.message, err.openai_type, param if param is not None else (err.field or None),
                      err.code.lower())  # fmt: skip
    headers = {}
    if err.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s)))
    return Response(json.dumps(body), err.http_status, headers, media_type="application/json")


def validation_error(err: ValidationError) -> InvalidArgumentError:
    """The first problem pydantic found, as an InvalidArgumentError naming the parameter."""
    first = err.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return InvalidArgumentError(f"We could not parse the JSON body of your request: {first['msg']}")
    if first["type"] == "model_type":
        return InvalidArgumentError("The request body must be a JSON object")
    param = _param_path(first["loc"])
    if first["type"] == "missing":
        return InvalidArgumentError(f"Missing required parameter: '{param}'", field=param)
    return InvalidArgumentError(f"Invalid value for '{param}': {first['msg']}", field=param)


def _param_path(loc: tuple[int | str, ...]) -> str:
    """`("messages", 0, "content")` -> `messages[0].content`; union-member tags are dropped."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not any(c in part for c in "[(-") and part not in ("str", "int", "float", "bool", "list"):
            path += f".{part}" if path else part
    return path


def install(app: FastAPI) -> None:
    """Every error leaves the app as an OpenAI error body."""

    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SupernodeError)
        return error_response(exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        type_ = _STATUS_TYPE.get(exc.status_code, "invalid_request_error")
        body = error_body(str(exc.detail), type_, None, None)
        return Response(json.dumps(body), exc.status_code, exc.headers, media_type="application/json")

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidArgumentError(str(exc.errors()[:1])))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s", request.url.path)
        body = error_body("The server had an error while processing your request", "server_error", None, None)
        return Response(json.dumps(body), 500, media_type="application/json")

    app.add_exception_handler(SupernodeError, on_domain)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)
