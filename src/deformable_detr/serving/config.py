"""What a server process needs to know: the checkpoint, the device and the limits, in one frozen dataclass.

The same `ServeConfig` travels to every worker process of `deformable-detr serve --workers N` as JSON in
the environment variable `DEFORMABLE_DETR_SERVE_CONFIG` (uvicorn starts workers by importing the app).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from deformable_detr.errors import ConfigError
from deformable_detr.util.config_fields import check_fields

ENV_VAR = "DEFORMABLE_DETR_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one server process.

    checkpoint: any file or folder `deformable_detr.load` reads.
    device: "cpu", "cuda" or "cuda:N". amp: bfloat16 autocast for the forward.
    compile: run the forward through torch.compile (CUDA graphs on a GPU; `deformable_detr.pipeline.compiled`),
        compiled for the common image shape at start-up, before the server accepts requests.
    attention_backend: the operator backend ("auto", "reference", "cpu", "triton"); None = the model's.
    batch_size: at most this many images per forward (`serve --batch-size`). max_wait_ms: how long the first request of a batch
        waits for others (0 = run whatever is queued at once).
    max_queue: requests waiting for the model; one more is answered 503 with Retry-After.
    max_upload_mb: request bodies above this are answered 413.
    max_image_pixels: decoded images above this many pixels (width * height) are refused (413):
        a small file can declare huge dimensions (a decompression bomb).
    api_key: when set, every /v1/* request needs `Authorization: Bearer <api_key>`.
    """

    checkpoint: str
    device: str = "cpu"
    amp: bool = False
    compile: bool = False
    attention_backend: str | None = None
    batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_upload_mb: float = 20.0
    max_image_pixels: int = 40_000_000
    api_key: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size (serve --batch-size) must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.max_wait_ms) and 0 <= self.max_wait_ms <= 10_000):
            raise ConfigError(f"max_wait_ms (--max-wait-ms) must be in [0, 10000], got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue (--max-queue) must be >= 1, got {self.max_queue}")
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ConfigError(f"max_upload_mb (--max-upload-mb) must be > 0, got {self.max_upload_mb}")
        if self.max_image_pixels < 1:
            raise ConfigError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key (--api-key) is empty; pass a non-empty key or none")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data: dict[str, Any] = json.loads(text)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{ENV_VAR}: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)
