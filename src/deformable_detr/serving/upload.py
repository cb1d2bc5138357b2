"""Uploads: the body-size limit (ASGI middleware) and decoding an uploaded image, each refusal one line.

app.add_middleware(UploadLimit, max_bytes=config.max_upload_bytes)   # 413 for a body over the limit
image = decode_upload(data, "photo.jpg", max_pixels)                 # RGB PIL, or an HTTPException
"""

from __future__ import annotations

import io

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

from deformable_detr.errors import DatasetError
from deformable_detr.pipeline.decode import load_rgb_image


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


class UploadLimit:
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
