"""The HTTP service: FastAPI app with dynamic batching, limits, metrics and the web page.

    app = create_app(ServeConfig(checkpoint="run/best.pth"))       # loads the model at startup
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: GET / (web page; its files under /static, its icon also as /favicon.ico), GET /health,
GET /metrics (Prometheus text), GET /v1/model, POST /v1/detect, POST /v1/explain (multipart `image`
upload), GET /openapi.json (no /docs or /redoc: FastAPI's pages load their scripts from a CDN, which
fails offline). With an API key, every /v1/* request needs `Authorization: Bearer KEY`. Errors are JSON `{"detail": "one line"}`;
the server never answers with a stack trace and keeps serving after any bad request.

The parts: `routes.py` (endpoints, request fields, error answers), `runner.py` (`BatchedRunner`: the model behind
the dynamic batcher of `batching.py`), `upload.py` (body limit, image decoding), `metrics.py`; this module
puts them together and counts every request.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.routing import Match

from deformable_detr.serving.config import ENV_VAR, ServeConfig
from deformable_detr.serving.metrics import ServerMetrics
from deformable_detr.serving.routes import add_error_handlers, add_service_routes, api_router
from deformable_detr.serving.runner import BatchedRunner, ModelRunner
from deformable_detr.serving.upload import UploadLimit


def create_app(config: ServeConfig, runner: ModelRunner | None = None) -> FastAPI:
    """The service for `config`.

    Args:
        config: checkpoint, device and limits.
        runner: an already loaded model (anything with `detect`, `explain`, `info`); None = load
            `config.checkpoint` when the app starts.
    """
    metrics = ServerMetrics()
    service = BatchedRunner(runner)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start(config)
        try:
            yield
        finally:
            await service.stop()  # uvicorn has let the in-flight requests finish; nothing is queued any more

    app = FastAPI(
        title="Deformable DETR detection service",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's /docs and /redoc pages load their scripts from a CDN: no use offline
        redoc_url=None,
        description="Object detection with a Deformable DETR model. Upload an image as multipart "
        "field `image`. With an API key, /v1/* needs `Authorization: Bearer KEY`.",
    )
    router = api_router(config, service)
    app.include_router(router)
    add_service_routes(app, config, service, metrics)
    add_error_handlers(app)
    app.add_middleware(UploadLimit, max_bytes=config.max_upload_bytes)  # inside count_requests: 413s are counted

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        arrived = dict(request.scope)  # routing rewrites root_path in the scope (a Mount adds its prefix)
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", None) or endpoint_of(arrived)
            metrics.observe_request(endpoint, status, time.perf_counter() - started)

    def endpoint_of(scope: dict[str, Any]) -> str:
        """The path of the route a request is for, also when it is answered before routing (a 413 for its
        body); "other" when no route has its path."""
        for candidate in (*router.routes, *app.routes):  # app.routes holds `router` as one entry without a path
            if getattr(candidate, "path", None) and candidate.matches(scope)[0] is not Match.NONE:
                return candidate.path  # a Mount's ("/static") for every file under it
        return "other"

    return app


def app_from_env() -> FastAPI:
    """The app for uvicorn's worker processes (`--workers N`): its `ServeConfig` is JSON in $DEFORMABLE_DETR_SERVE_CONFIG."""
    text = os.environ.get(ENV_VAR)
    if not text:
        raise RuntimeError(f"${ENV_VAR} is not set; start the server with `deformable-detr serve`")
    return create_app(ServeConfig.from_json(text))
