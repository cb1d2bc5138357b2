"""The HTTP service: FastAPI app with dynamic batching, limits, metrics and the web page.

    app = create_app(ServeConfig(checkpoint="run/best.pth"))       # loads the model at startup
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: GET / (web page; its files under /static, its icon also as /favicon.ico), GET /health,
GET /metrics (Prometheus text), GET /v1/model, POST /v1/detect, POST /v1/explain (multipart `image`
upload), GET /openapi.json (no /docs or /redoc: FastAPI's pages load their scripts from a CDN, which
fails offline). With an API key, every /v1/* request needs `Authorization: Bearer KEY`. Errors are JSON `{"detail": "one line"}`;
the server never answers with a stack trace and keeps serving after any bad request.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import logging
import os
import time
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from deformable_detr.errors import DatasetError, DeformableDetrError
from deformable_detr.pipeline.decode import load_rgb_image
from deformable_detr.pipeline.run import DEFAULT_THRESHOLD
from deformable_detr.serving.batching import DynamicBatcher, QueueFullError
from deformable_detr.serving.config import ENV_VAR, ServeConfig
from deformable_detr.serving.metrics import ServerMetrics
from deformable_detr.serving.runner import TOP_K, ModelRunner, load_runner

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


class _NamedUpload(io.BytesIO):
    """Uploaded bytes that print as the upload's file name (for the decoder's error messages)."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.upload_name = name

    def __str__(self) -> str:
        return self.upload_name


def decode_upload(data: bytes, filename: str, max_pixels: int) -> Image.Image:
    """Uploaded bytes -> RGB PIL image (EXIF orientation applied), or an HTTPException saying why not.

    400: empty or corrupt; 415: not an image format PIL reads; 413: more than `max_pixels` pixels
    (checked from the header, before decoding, so a decompression bomb is refused cheaply).
    """
    if not data:
        raise HTTPException(400, f"{filename}: the upload is empty; send an image file in the `image` field")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except UnidentifiedImageError:
        raise HTTPException(
            415, f"{filename}: not an image format the server reads; send JPEG, PNG, BMP, GIF, TIFF or WebP"
        ) from None
    except Image.DecompressionBombError as error:  # PIL's own limit, above ours unless max_image_pixels is huge
        raise HTTPException(413, f"{filename}: {str(error).rstrip('.')}; send a smaller image") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise HTTPException(400, f"{filename}: cannot read the image header ({error}); the file is corrupt") from None
    if width * height > max_pixels:
        raise HTTPException(
            413,
            f"{filename}: {width}x{height} = {width * height} pixels exceeds the server's limit "
            f"of {max_pixels} (max_image_pixels); send a smaller image",
        )
    try:
        return load_rgb_image(_NamedUpload(data, filename))
    except (DatasetError, Image.DecompressionBombError) as error:
        raise HTTPException(
            400,
            f"{filename}: cannot decode the image, it is corrupt or truncated "
            f"({str(error).split(' (', 1)[-1].split(');')[0]})",
        ) from None


# An oversized body is read to its end and dropped before the 413 goes out: a client that reads the
# answer only after sending everything (Python's urllib, many scripts) would otherwise see its upload cut
# off ("Connection reset by peer", "Broken pipe") instead of the 413. Reading stops at this many bytes
# (4 times the limit, at least 128 MiB); a body declared or found to be longer is answered at once and its
# connection closed, which such clients see as a reset (clients that read while sending, such as curl,
# httpx and browsers, still get the 413).
DISCARD_FACTOR = 4
DISCARD_MIN_BYTES = 128 * 1024 * 1024


async def _discard_body(receive, received: int, limit: int) -> None:
    """Read and drop the rest of a request body until it ends, the client leaves, or `limit` bytes were read."""
    while received <= limit:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class _UploadLimit:
    """ASGI middleware: request bodies over `max_bytes` are answered 413, whether or not the client
    sent a Content-Length (chunked uploads are counted as they arrive). The oversized body is read and
    dropped first (up to `discard_bytes`), so that clients that read only after sending get the 413 too;
    a client that announced it with `Expect: 100-continue` is answered before it sends the body."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.discard_bytes = max(DISCARD_FACTOR * max_bytes, DISCARD_MIN_BYTES)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):  # no route reads their body
            return await self.app(scope, receive, send)
        message = (
            f"the request body exceeds the server's upload limit of {self.max_bytes} bytes "
            "(max_upload_mb); send a smaller image"
        )
        response = JSONResponse({"detail": message}, status_code=413, headers={"Connection": "close"})
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue" and int(length) <= self.discard_bytes:
                await _discard_body(receive, 0, self.discard_bytes)
            return await response(scope, receive, send)
        received = 0
        exceeded = False
        started = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    if message.get("more_body", False):
                        await _discard_body(receive, received, self.discard_bytes)
                    raise HTTPException(413, "upload too large")
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded and not started:  # the app's answer to the aborted body is replaced by ours
                started = True
                await response(scope, receive, send)
                return
            if exceeded:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def create_app(config: ServeConfig, runner: ModelRunner | None = None) -> FastAPI:
    """The service for `config`.

    Args:
        config: checkpoint, device and limits.
        runner: an already loaded model (anything with `detect`, `explain`, `info`); None = load
            `config.checkpoint` when the app starts.
    """
    metrics = ServerMetrics()
    state: dict[str, Any] = {"runner": runner, "batcher": None}

    def run_batch(
        items: list[tuple[Image.Image, float, float, int]],
    ) -> list[tuple[list[dict], dict[str, float]]]:
        """items: (image, time queued, threshold, top_k) per request; each keeps its own threshold and top_k."""
        started = time.perf_counter()
        images, queued_at, thresholds, top_ks = (list(column) for column in zip(*items))
        per_image = state["runner"].detect(images, threshold=thresholds, top_k=top_ks)
        model_ms = (time.perf_counter() - started) * 1e3
        return [
            (detections, {"queue_ms": (started - queued) * 1e3, "model_ms": model_ms, "batch_size": len(items)})
            for detections, queued in zip(per_image, queued_at)
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if state["runner"] is None:
            state["runner"] = await run_in_threadpool(load_runner, config)
            logger.info("loaded %s on %s", config.checkpoint, config.device)
        batcher = DynamicBatcher(run_batch, config.max_batch, config.max_wait_ms / 1e3, config.max_queue)
        await batcher.start()
        # The first forward loads (or compiles) the attention kernel, and a compiled model compiles its common
        # shape: pay both here, on the model thread, before uvicorn accepts the first connection.
        warm_up = getattr(state["runner"], "warm_up", None)  # a ModelRunner has it; an injected runner may not
        if warm_up is None:
            await batcher.run_exclusive(state["runner"].detect, [Image.new("RGB", (64, 64), (128, 128, 128))])
        elif (summary := await batcher.run_exclusive(warm_up, config.max_batch)) is not None:
            logging.getLogger("uvicorn.error").info("%s (warm-up before serving)", summary)  # uvicorn's console
        state["batcher"] = batcher
        try:
            yield
        finally:
            await batcher.stop()  # uvicorn has let the in-flight requests finish; nothing is queued any more

    app = FastAPI(
        title="Deformable DETR detection service",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's /docs and /redoc pages load their scripts from a CDN: no use offline
        redoc_url=None,
        description="Object detection with a Deformable DETR model. Upload an image as multipart "
        "field `image`. With an API key, /v1/* needs `Authorization: Bearer KEY`.",
    )

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
        return {**state["runner"].info(), "max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms}

    @router.post("/detect", summary="Detect objects in one uploaded image", responses=UPLOAD_RESPONSES)
    async def detect(
        image: ImageField, threshold: Threshold = DEFAULT_THRESHOLD, top_k: TopK = TOP_K
    ) -> dict[str, Any]:
        started = time.perf_counter()
        decoded, decode_ms = await read_image(image)
        detections, timing = await state["batcher"].submit((decoded, time.perf_counter(), threshold, top_k))
        timing = {"decode_ms": decode_ms, **timing, "total_ms": (time.perf_counter() - started) * 1e3}
        return {"image": {"width": decoded.width, "height": decoded.height}, "detections": detections, "timing": timing}

    @router.post(
        "/explain",
        summary="Where the model looked: sampling points and attention weights of the top "
        "detections (last decoder layer), in the image's pixels",
        responses=UPLOAD_RESPONSES,
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
        result = await state["batcher"].run_exclusive(state["runner"].explain, decoded, top_k, threshold, pixel)
        return {**result, "timing": {"decode_ms": decode_ms, "total_ms": (time.perf_counter() - started) * 1e3}}

    app.include_router(router)

    @app.get("/health", summary="Liveness, queue depth and batches formed")
    async def health() -> dict[str, Any]:
        batcher: DynamicBatcher | None = state["batcher"]
        return {
            "status": "ok",
            "model_loaded": state["runner"] is not None,
            "auth_required": config.api_key is not None,
            "pid": os.getpid(),
            "queue_depth": batcher.queue_depth if batcher else 0,
            "running": batcher.running if batcher else 0,
            "batches_formed": batcher.batches_formed if batcher else 0,
            "images_done": batcher.items_done if batcher else 0,
            "batch_sizes": {str(k): v for k, v in sorted(batcher.batch_sizes.items())} if batcher else {},
            "max_batch": config.max_batch,
            "max_queue": config.max_queue,
        }

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        batcher: DynamicBatcher | None = state["batcher"]
        text = metrics.render(
            dict(batcher.batch_sizes) if batcher else {},
            batcher.queue_depth if batcher else 0,
            batcher.batches_formed if batcher else 0,
            config.max_batch,
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)  # the page names its icon; this is for the other URLs
    async def favicon() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "favicon.svg"), media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

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

    app.add_middleware(_UploadLimit, max_bytes=config.max_upload_bytes)  # inside count_requests: 413s are counted

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
