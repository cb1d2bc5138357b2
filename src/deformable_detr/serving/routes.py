"""The service's routes: /v1/model, /v1/detect, /v1/explain (behind the API key), /health, /metrics, the page,
and the handlers that turn every error into one JSON line. `create_app` (app.py) puts them together.

Request fields and answer models are declared here, so the OpenAPI description names each field's limits
and each operation's possible error answers.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from deformable_detr.errors import DeformableDetrError
from deformable_detr.pipeline.run import DEFAULT_THRESHOLD
from deformable_detr.serving.batching import QueueFullError
from deformable_detr.serving.config import ServeConfig
from deformable_detr.serving.metrics import ServerMetrics
from deformable_detr.serving.runner import TOP_K, BatchedRunner
from deformable_detr.serving.upload import decode_upload

logger = logging.getLogger("deformable_detr.serving")
STATIC_DIR = resources.files("deformable_detr.serving") / "static"


class ErrorAnswer(BaseModel):
    """The body of every error answer."""

    detail: str = Field(description="one line naming the file or field, the problem and what to do")


class FieldError(BaseModel):
    loc: list[str] = Field(description='where the bad value is, e.g. ["body", "threshold"]')
    msg: str
    type: str


class InvalidRequestAnswer(ErrorAnswer):
    """The body of a 422: the one-line summary and each field's problem."""

    errors: list[FieldError] = Field(
        default_factory=list, description="each field's problem; absent when the fields are fine alone but not together"
    )


def _error(description: str, model: type[BaseModel] = ErrorAnswer, **extra: Any) -> dict[str, Any]:
    return {"description": description, "model": model, **extra}


# What each kind of operation can answer besides 200 (and 500, an internal error, which any can).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("Missing or wrong `Authorization: Bearer KEY`."),
}
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The upload is empty, corrupt or not decodable."),
    413: _error("The request body exceeds the upload limit (max_upload_mb), or the image the pixel limit."),
    415: _error("The upload is not an image format the server reads."),
    422: _error("A form field is missing or out of range.", InvalidRequestAnswer),
    503: _error(
        "The queue is full; retry after `Retry-After` seconds.",
        headers={"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    ),
}

# Request fields (module level: FastAPI resolves the string annotations in this module's globals).
ImageField = Annotated[UploadFile, File(description="the image file (JPEG, PNG, BMP, GIF, TIFF, WebP)")]
Threshold = Annotated[
    float, Form(ge=0.0, le=1.0, allow_inf_nan=False, description="keep detections scoring at least this")
]
TopK = Annotated[int, Form(ge=1, le=TOP_K, description="at most this many detections, best first")]
ExplainTopK = Annotated[
    int, Form(ge=1, le=TOP_K, description="explain this many of the best detections (one per query)")
]
PixelCoordinate = Annotated[
    float | None,
    Form(ge=0.0, description="with both pixel_x and pixel_y: also the encoder's sampling points at this pixel"),
]


def api_router(config: ServeConfig, service: BatchedRunner) -> APIRouter:
    """/v1/model, /v1/detect and /v1/explain; with `config.api_key`, each needs `Authorization: Bearer KEY`."""

    async def require_key(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key; send `Authorization: Bearer KEY`",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def form_fields_only(request: Request) -> None:
        """Fields come as form fields; a query string would be ignored, so it is refused (422) instead."""
        if request.query_params:
            names = ", ".join(sorted(set(request.query_params.keys())))
            raise HTTPException(422, f"query parameters are not read ({names}); send them as multipart form fields")

    async def read_image(image: UploadFile) -> tuple[Image.Image, float]:
        started = time.perf_counter()
        data = await image.read()
        decoded = await run_in_threadpool(decode_upload, data, image.filename or "upload", config.max_image_pixels)
        return decoded, (time.perf_counter() - started) * 1e3

    router = APIRouter(
        prefix="/v1", dependencies=[Depends(require_key)], responses=AUTH_RESPONSES if config.api_key else {}
    )

    @router.get("/model", summary="The loaded model: variant, categories, preprocessing")
    async def model_info() -> dict[str, Any]:
        return {**service.runner.info(), "batch_size": config.batch_size, "max_wait_ms": config.max_wait_ms}

    @router.post(
        "/detect",
        summary="Detect objects in one uploaded image",
        responses=UPLOAD_RESPONSES,
        dependencies=[Depends(form_fields_only)],
    )
    async def detect(
        image: ImageField, threshold: Threshold = DEFAULT_THRESHOLD, top_k: TopK = TOP_K
    ) -> dict[str, Any]:
        started = time.perf_counter()
        decoded, decode_ms = await read_image(image)
        detections, timing = await service.batcher.submit((decoded, time.perf_counter(), threshold, top_k))
        timing = {"decode_ms": decode_ms, **timing, "total_ms": (time.perf_counter() - started) * 1e3}
        return {"image": {"width": decoded.width, "height": decoded.height}, "detections": detections, "timing": timing}

    @router.post(
        "/explain",
        summary="Where the model looked: sampling points and attention weights of the top "
        "detections (last decoder layer), in the image's pixels",
        responses=UPLOAD_RESPONSES,
        dependencies=[Depends(form_fields_only)],
    )
    async def explain(
        image: ImageField,
        threshold: Threshold = DEFAULT_THRESHOLD,
        top_k: ExplainTopK = 5,
        pixel_x: PixelCoordinate = None,
        pixel_y: PixelCoordinate = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        if (pixel_x is None) != (pixel_y is None):
            raise HTTPException(422, "give both pixel_x and pixel_y, or neither")
        decoded, decode_ms = await read_image(image)
        if pixel_x is not None and not (pixel_x < decoded.width and pixel_y < decoded.height):
            raise HTTPException(
                422, f"pixel ({pixel_x:g}, {pixel_y:g}) is outside the {decoded.width}x{decoded.height} image"
            )
        pixel = None if pixel_x is None else (pixel_x, pixel_y)
        result = await service.batcher.run_exclusive(service.runner.explain, decoded, top_k, threshold, pixel)
        return {**result, "timing": {"decode_ms": decode_ms, "total_ms": (time.perf_counter() - started) * 1e3}}

    return router


def add_service_routes(app: FastAPI, config: ServeConfig, service: BatchedRunner, metrics: ServerMetrics) -> None:
    """/health, /metrics (Prometheus text), the page at / (its files under /static) and /favicon.ico."""

    @app.get("/health", summary="Liveness, queue depth and batches formed")
    async def health() -> dict[str, Any]:
        batcher = service.batcher
        return {
            "status": "ok",
            "model_loaded": service.runner is not None,
            "auth_required": config.api_key is not None,
            "pid": os.getpid(),
            "queue_depth": batcher.queue_depth if batcher else 0,
            "running": batcher.running if batcher else 0,
            "batches_formed": batcher.batches_formed if batcher else 0,
            "images_done": batcher.items_done if batcher else 0,
            "batch_sizes": {str(k): v for k, v in sorted(batcher.batch_sizes.items())} if batcher else {},
            "batch_size": config.batch_size,
            "max_queue": config.max_queue,
        }

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        batcher = service.batcher
        text = metrics.render(
            dict(batcher.batch_sizes) if batcher else {},
            batcher.queue_depth if batcher else 0,
            batcher.batches_formed if batcher else 0,
            config.batch_size,
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)  # the page names its icon; this is for the other URLs
    async def favicon() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "favicon.svg"), media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")


def add_error_handlers(app: FastAPI) -> None:
    """Every error answer is JSON {"detail": "one line"}: 503 queue full (with Retry-After), 422 invalid fields
    (each listed), 400 the package's own errors (an unusable image, a model that cannot explain), 500 a bug
    (logged; the answer names only its type)."""

    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, error: QueueFullError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": str(error.retry_after_s)})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(part) for part in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in error.errors()
        ]
        summary = "; ".join(f"{'.'.join(e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": f"invalid request: {summary}", "errors": errors}, status_code=422)

    @app.exception_handler(DeformableDetrError)
    async def unusable_input(request: Request, error: DeformableDetrError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        logger.exception("error answering %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(error).__name__}); the server log has the details"}, status_code=500
        )
