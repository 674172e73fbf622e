"""The OpenAI-compatible HTTP app in front of the router: `create_app(settings, client_factory)`.

Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /v1/models/{model},
GET|HEAD /health (503 while the router does not answer SERVING), GET|POST /ping, GET /version,
POST /tokenize, POST /detokenize, GET /metrics (OpenMetrics or text, as asked), GET /openapi.json,
GET /docs. `/v1/*` needs `Authorization: Bearer <key>` when `frontend.api_keys` is set (as in vLLM,
the other routes do not). The router client is built on first use inside the event loop and closed
at shutdown.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from supernode.frontend import errors
from supernode.frontend.admission import ARRIVED_AT, ON_FIRST_TOKEN, AdmissionMiddleware
from supernode.frontend.client import ClientFactory, RouterClient, sdk_client_factory
from supernode.frontend.encoders import Encoder
from supernode.frontend.http_metrics import HttpMetricsMiddleware
from supernode.frontend.schemas import ChatCompletionRequest, CompletionRequest, Limits
from supernode.frontend.serving import respond
from supernode.frontend.tokenize import DetokenizeRequest, TokenizeRequest, detokenize, tokenize
from supernode.runtime import tokenization
from supernode.runtime.config import Settings
from supernode.runtime.metrics import CollectorRegistry, ServingMetrics, exposition

M = TypeVar("M", bound=BaseModel)
VERSION = importlib.metadata.version("supernode")


class Frontend:
    """What the routes share: settings, the router client, metrics."""

    def __init__(self, settings: Settings, client_factory: ClientFactory) -> None:
        self.settings = settings
        self.model_name = settings.frontend.model_name
        self.registry = CollectorRegistry()
        self.metrics = ServingMetrics(self.model_name, self.registry)
        self.created = int(time.time())
        self._client_factory = client_factory
        self._client: RouterClient | None = None
        self._api_keys = [key.encode() for key in settings.frontend.api_keys]
        self.tokenizer = tokenization.tokenizer(settings)
        self.limits = Limits(
            max_tokens=settings.router.max_tokens_limit,
            max_model_len=settings.router.max_context_tokens,
            max_n=settings.frontend.max_n,
            long_context=settings.router.long_context,
        )

    @property
    def client(self) -> RouterClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def check_auth(self, request: Request) -> None:
        if not self._api_keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, key) for key in self._api_keys):
            raise errors.InvalidApiKeyError(
                "Incorrect or missing API key; send 'Authorization: Bearer <key>'"
            )

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise errors.ModelNotFoundError(f"The model '{model}' does not exist", field="model")

    def model_card(self) -> dict[str, object]:
        return {
            "id": self.model_name, "object": "model", "created": self.created, "owned_by": "supernode",
            "root": self.model_name, "parent": None, "max_model_len": self.limits.max_model_len,
            "permission": [],
        }  # fmt: skip

    def render_token(self, token_id: int) -> str:
        """One token's text as `logprobs` shows it (special tokens by name)."""
        return self.tokenizer.decode([token_id], skip_special_tokens=False)


def create_app(settings: Settings, client_factory: ClientFactory | None = None) -> FastAPI:
    """The app; `client_factory` builds the router client (default: the SDK to `router.address`)."""
    frontend = Frontend(settings, client_factory or sdk_client_factory(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await frontend.close()

    app = FastAPI(
        title="Supernode (OpenAI-compatible, vLLM's surface)", version=VERSION, lifespan=lifespan,
        docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
    )  # fmt: skip
    app.state.frontend = frontend
    errors.install(app)
    app.add_middleware(AdmissionMiddleware, settings=settings, registry=frontend.registry)
    app.add_middleware(HttpMetricsMiddleware, registry=frontend.registry)
    _add_routes(app, frontend)
    return app


def _add_routes(app: FastAPI, frontend: Frontend) -> None:
    max_body_bytes = frontend.settings.frontend.max_body_bytes

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        frontend.check_auth(request)
        body = _parse(CompletionRequest, await _read_body(request, max_body_bytes))
        return await _generate(frontend, request, body)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        frontend.check_auth(request)
        body = _parse(ChatCompletionRequest, await _read_body(request, max_body_bytes))
        return await _generate(frontend, request, body)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        frontend.check_auth(request)
        return JSONResponse({"object": "list", "data": [frontend.model_card()]})

    @app.get("/v1/models/{model:path}")
    async def model(request: Request, model: str) -> Response:
        frontend.check_auth(request)
        frontend.check_model(model)
        return JSONResponse(frontend.model_card())

    async def health() -> Response:
        if await frontend.client.is_serving():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "reason": "router not serving"}, status_code=503)

    for path, method in (("/health", "GET"), ("/health", "HEAD"), ("/ping", "GET"), ("/ping", "POST")):
        app.add_api_route(path, health, methods=[method], operation_id=f"{path[1:]}_{method.lower()}")

    @app.get("/version")
    async def version() -> Response:
        return JSONResponse({"version": VERSION})

    @app.post("/tokenize")
    async def tokenize_route(request: Request) -> Response:
        body = _parse(TokenizeRequest, await _read_body(request, max_body_bytes))
        if body.model is not None:
            frontend.check_model(body.model)
        return JSONResponse(tokenize(body, frontend.tokenizer, frontend.limits.max_model_len))

    @app.post("/detokenize")
    async def detokenize_route(request: Request) -> Response:
        body = _parse(DetokenizeRequest, await _read_body(request, max_body_bytes))
        if body.model is not None:
            frontend.check_model(body.model)
        return JSONResponse(detokenize(body, frontend.tokenizer))

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        body, content_type = exposition(request.headers.get("accept"), frontend.registry)
        return Response(body, media_type=content_type)


async def _generate(
    frontend: Frontend, request: Request, body: CompletionRequest | ChatCompletionRequest
) -> Response:
    frontend.check_model(body.model)
    params = body.to_params(frontend.limits, frontend.tokenizer.encode)
    is_chat = isinstance(body, ChatCompletionRequest)
    encoder = Encoder(
        frontend.model_name, chat=is_chat, include_usage=body.include_usage, render=frontend.render_token
    )
    return await respond(
        frontend.client,
        params,
        encoder,
        frontend.metrics,
        stream=body.stream,
        request_id=request.headers.get("x-request-id", ""),
        prompt_param="messages" if is_chat else "prompt",
        time_scale=frontend.settings.runtime.time_scale,
        eos_token_id=frontend.tokenizer.eos_token_id,
        arrived_at=request.scope.get(ARRIVED_AT),
        on_first_token=request.scope.get(ON_FIRST_TOKEN),
    )


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, or PayloadTooLargeError as soon as it is known to exceed `max_bytes`."""
    too_large = errors.PayloadTooLargeError(f"Request body exceeds the limit of {max_bytes} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > max_bytes:
            raise too_large
        parts.append(part)
    return b"".join(parts)


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise errors.validation_error(err) from None
