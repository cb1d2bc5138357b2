"""Compiled inference: `model.predict` through torch.compile, with CUDA graphs on a GPU and shape buckets.

    model = deformable_detr.load("run/best.pth", device="cuda", compile=True)   # = compile_inference(model)
    model.predict(images, amp=True)         # the first batch of a new shape bucket compiles (~1 min on a GPU)
    model.compiled_inference.warm_up()      # compile the common bucket now (`serve --compile` does, at load)
    model.compiled_inference.compiles       # what compiled, and how long those first calls took

Why and how. At batch 1 an eager forward is launch-bound on a GPU: ~2,500 kernels, most of them in the
transformer's small per-layer ops. The work splits the way `predict` already splits it
(`deformable_detr.pipeline.run`):

- Backbone and input projections run on each image alone, unpadded (the ResNet and the projections'
  GroupNorm see padding), through torch.compile with dynamic height and width and no CUDA graphs: a CUDA
  graph holds one fixed shape and image sizes vary continuously, while fused kernels of a ResNet at 800 px
  are long enough to hide their launches. One compile serves every size (seen on the CPU: 800x1066,
  800x1200, 750x1333, 1066x800 and 512x683 without a recompile); a symbolic batch size, by contrast, made
  inductor fail (torch 2.13, ValueRangeError), hence one image at a time.
- The transformer and heads (`model.detect`) hold most of the kernels, and their outputs do not depend
  on padding given the masks. Their per-level inputs are padded up to a shape bucket (`buckets.py`: the
  largest resized side rounded up to `bucket_px`) and run by torch.compile(mode="reduce-overhead",
  fullgraph=True): inductor's fused kernels replayed as one CUDA graph. Shapes are static per bucket; the
  batch dimension is static at 1 and dynamic from 2 (one compile serves batches 2, 3, ...; CUDA graphs
  record once per batch size, which costs a few forwards, not a compile). Only pred_logits and pred_boxes
  leave the graph, so the auxiliary per-layer heads are dead code to the compiler.
- At most `max_buckets` image buckets compile; past that a batch runs in the smallest bucket in use
  that holds it, else uncompiled (with one warning). The recompile limit is raised around these calls
  only, so buckets never fall back to eager silently.
- Calls run under torch.no_grad outside inference mode (CUDA-graph trees and inference tensors do not
  mix, pytorch/pytorch#135892), and outputs are cloned (a CUDA graph's next replay overwrites them).
- CUDA graphs belong to the thread that recorded them: call from one thread (`serve` runs every forward,
  warm-up included, on its one model thread). On a CPU the same runs through inductor's C++ backend
  without CUDA graphs; where torch.compile cannot run, the first call raises a one-line `BackendError`.
  Where only the backbone's (dynamic-shape) compile fails, it warns once and runs the backbone eagerly.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from deformable_detr.errors import BackendError, ConfigError
from deformable_detr.pipeline.buckets import choose_bucket, level_sizes, level_strides
from deformable_detr.pipeline.processor import Processor
from deformable_detr.pipeline.run import level_maps, pad_levels

COMMON_IMAGE = (480, 640)  # (H, W) of the most common photo shape (4:3 landscape, COCO's usual size)
_RECOMPILE_MARGIN = 8  # other code's entries for the same functions (another model's runner, another dtype)


def _compile(function, **options):
    """torch.compile; one place, so tests can check the bucketing without compiling."""
    return torch.compile(function, **options)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class CompiledInference:
    """`model_outputs` for one model, compiled: set as `model.compiled_inference` by `compile_inference`.

    Args:
        model: the detector (`image_features`, `detect`, `backbone.strides`), already on its device.
        bucket_px: image buckets are the resized sides rounded up to multiples of this (>= 1).
        max_buckets: most image buckets compiled (>= 1); see `buckets.choose_bucket`.
        compile_backbone: also compile the backbone and input projections (dynamic height and width, one image
            at a time, no CUDA graphs); False runs them eagerly, grouped by size.
    """

    def __init__(
        self, model: torch.nn.Module, bucket_px: int = 64, max_buckets: int = 8, compile_backbone: bool = True
    ):
        for name, value in (("bucket_px", bucket_px), ("max_buckets", max_buckets)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        self.model = model
        self.device = _device_of(model)
        self.bucket_px, self.max_buckets = bucket_px, max_buckets
        self.mode = "reduce-overhead" if self.device.type == "cuda" else "default"  # CUDA graphs on a GPU only
        self.buckets: list[tuple[int, int]] = []  # image buckets in use, in order of first use
        self.compiles: list[dict[str, Any]] = []  # one record per first call of a new compiled shape
        self._warned = False
        try:
            self._features = _compile(model.image_features, dynamic=True, fullgraph=True) if compile_backbone else None
            self._detect = _compile(self._detect_outputs, mode=self.mode, dynamic=False, fullgraph=True)
        except RuntimeError as error:  # e.g. a Python version torch.compile does not support yet
            raise BackendError(f"torch.compile is unavailable here ({error}); run without compile") from None

    def _detect_outputs(
        self, sources: list[torch.Tensor], masks: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The compiled function: (B, Lq, K) logits and (B, Lq, 4) boxes of `model.detect`."""
        out = self.model.detect(sources, masks)
        return out["pred_logits"], out["pred_boxes"]

    def __call__(self, tensors: list[torch.Tensor], amp: bool = False) -> dict[str, torch.Tensor]:
        """The model's outputs for preprocessed images of any sizes, as `forward_unpadded` computes them.

        Args:
            tensors: per image, (3, h_i, w_i) normalized pixels.
            amp: bfloat16 autocast.

        Returns:
            {"pred_logits": (B, Lq, K), "pred_boxes": (B, Lq, 4)}, images in the order given; equal to the
            eager outputs up to float rounding (tests: fp32 and bf16 tolerances).

        Raises:
            ConfigError: the model moved to another device after `compile_inference`.
            BackendError: torch.compile failed here (e.g. no C++ compiler for inductor on a CPU).
        """
        device = _device_of(self.model)
        if device != self.device:
            raise ConfigError(
                f"the model moved from {self.device} to {device} after compile_inference; call "
                "compile_inference(model) again on its new device"
            )
        started = time.perf_counter()
        with self._context(amp), _one_line_compile_errors(self.device):
            per_image = self._level_maps(tensors)  # per image, per level (C, H_l, W_l)
            size = (max(t.shape[-2] for t in tensors), max(t.shape[-1] for t in tensors))
            bucket = choose_bucket(size, self.buckets, self.bucket_px, self.max_buckets)
            if bucket is None:
                self._warn_uncompiled(size)
                out = self.model.detect(*pad_levels(per_image))
                return {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}
            if bucket not in self.buckets:
                self.buckets.append(bucket)
            sources, masks = self._padded(per_image, bucket)
            if self.device.type == "cuda":
                _cudagraph_trees_ready_on_this_thread()
                torch.compiler.cudagraph_mark_step_begin()
            skips = counters["inductor"]["cudagraph_skips"]
            logits, boxes = self._detect(sources, masks)
            out = {"pred_logits": logits.clone(), "pred_boxes": boxes.clone()}  # the next replay overwrites them
        self._record(bucket, len(tensors), amp, started, counters["inductor"]["cudagraph_skips"] - skips)
        return out

    def _level_maps(self, tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """`level_maps` through the compiled backbone, one image at a time; where compiling it fails (a
        dynamic-shape compile meets more compiler bugs than the transformer's static one), one warning, and
        the backbone runs eagerly (grouped by size) from then on while the transformer stays compiled."""
        if self._features is not None:
            try:  # one image at a time: one compile serves every size (a symbolic batch fails in inductor)
                return [level_maps(self.model, [tensor], self._features)[0] for tensor in tensors]
            except torch._dynamo.exc.BackendCompilerFailed as error:
                self._features = None
                warnings.warn(
                    f"compiled inference: compiling the backbone failed on {self.device.type} ({_reason(error)}); "
                    "it runs eagerly from now on, the transformer stays compiled",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return level_maps(self.model, tensors)

    def _padded(
        self, per_image: list[list[torch.Tensor]], bucket: tuple[int, int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level, (B, C, H_l, W_l) maps and (B, H_l, W_l) masks padded to `bucket`'s level sizes; the batch
        dimension marked dynamic from 2 images on (batch 1 always gets its own, static, compile)."""
        actual = [  # per level, the largest (H_l, W_l) of the batch
            (max(maps[level].shape[-2] for maps in per_image), max(maps[level].shape[-1] for maps in per_image))
            for level in range(len(per_image[0]))
        ]
        strides = level_strides(self.model.backbone.strides, len(actual))
        sources, masks = pad_levels(per_image, level_sizes(bucket, strides, actual))
        if len(per_image) > 1:
            for tensor in (*sources, *masks):
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return sources, masks

    def warm_up(
        self, image_sizes: Sequence[tuple[int, int]] | None = None, batch_sizes: Sequence[int] = (1,), amp: bool = False
    ) -> float:
        """Compile (and record CUDA graphs for) the given shapes now, so no request pays for it later.

        Args:
            image_sizes: (h, w) of preprocessed (resized) images; None = the model's resize of a 480x640
                photo (800x1066 with the paper's preprocessing).
            batch_sizes: batch sizes to run each size at; 1 and 2 cover both compiles of a bucket.
            amp: bfloat16 autocast, as the later calls will use.

        Returns:
            seconds spent.
        """
        if image_sizes is None:
            image_sizes = [Processor(self.model.preprocess).resized_size(*COMMON_IMAGE)]
        started = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            for height, width in image_sizes:
                for batch in batch_sizes:
                    tensors = [torch.zeros(3, height, width) for _ in range(batch)]
                    for _ in range(2):  # CUDA graphs: the first call warms up, the second records
                        self(tensors, amp=amp)
        finally:
            self.model.train(was_training)
        return time.perf_counter() - started

    def summary(self) -> str:
        """One line: the buckets compiled and the seconds their first calls took (compilation included)."""
        if not self.compiles:
            return "torch.compile: nothing compiled yet"
        seconds = sum(record["seconds"] for record in self.compiles)
        shapes = ", ".join(
            f"{record['image_bucket'][0]}x{record['image_bucket'][1]} batch {record['batch']}"
            + (" bf16" if record["amp"] else "")
            for record in self.compiles
        )
        skipped = sum(record.get("cudagraph_skips", 0) for record in self.compiles)
        return (
            f"torch.compile ({self.mode}, {self.device.type}): {len(self.compiles)} shape(s) [{shapes}], first calls "
            f"{seconds:.1f} s" + (f"; CUDA graphs declined {skipped} time(s)" if skipped else "")
        )

    @contextlib.contextmanager
    def _context(self, amp: bool) -> Iterator[None]:
        """no_grad outside inference mode, autocast, and a recompile limit that fits every bucket."""
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        # per bucket: batch 1 and batch >= 2, fp32 and bf16
        limit = max(getattr(config, name), 4 * self.max_buckets + _RECOMPILE_MARGIN)
        with (
            torch.inference_mode(False),
            torch.no_grad(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp),
            config.patch({name: limit}),
        ):
            yield

    def _record(self, bucket: tuple[int, int], batch: int, amp: bool, started: float, cudagraph_skips: int) -> None:
        """Note the first call of a (bucket, batch 1 or >= 2, amp) shape, which compiled it, and whether inductor
        declined CUDA graphs for it (it says why only under TORCH_LOGS=perf_hints)."""
        batch_class = "1" if batch == 1 else ">=2"
        if any(
            r["image_bucket"] == list(bucket) and r["batch"] == batch_class and r["amp"] == amp for r in self.compiles
        ):
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        self.compiles.append(
            {"image_bucket": list(bucket), "batch": batch_class, "amp": amp, "seconds": seconds}
            | ({"cudagraph_skips": cudagraph_skips} if self.mode == "reduce-overhead" else {})
        )
        if cudagraph_skips and self.mode == "reduce-overhead":
            warnings.warn(
                f"compiled inference: inductor did not use CUDA graphs for the transformer at {bucket[0]}x{bucket[1]} "
                "(TORCH_LOGS=perf_hints says why); it runs compiled without them: same outputs, more launch time",
                RuntimeWarning,
                stacklevel=3,
            )

    def _warn_uncompiled(self, size: tuple[int, int]) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"compiled inference: {len(self.buckets)} shape buckets are in use (max_buckets) and none holds a "
                f"{size[0]}x{size[1]} batch, so it runs uncompiled; pass a larger max_buckets to compile_inference",
                RuntimeWarning,
                stacklevel=3,
            )


def compile_inference(
    model: torch.nn.Module, bucket_px: int = 64, max_buckets: int = 8, compile_backbone: bool = True
) -> torch.nn.Module:
    """Make `model.predict` (and everything built on it: `predict`, `serve`) run compiled; see the module docstring.

    Compilation is lazy: the first batch of each new shape bucket compiles (about a minute on a GPU, minutes
    on a CPU); `model.compiled_inference.warm_up()` does it ahead. `model.compiled_inference = None` goes back
    to eager. Training, `eval` and `explain` never use it.

    Args:
        model: a detector on the device it will run on (move it first: a moved model is refused).
        bucket_px, max_buckets, compile_backbone: see `CompiledInference`.

    Returns:
        `model`, with `model.compiled_inference` set.
    """
    model.compiled_inference = CompiledInference(model, bucket_px, max_buckets, compile_backbone)
    return model


@contextlib.contextmanager
def _one_line_compile_errors(device: torch.device) -> Iterator[None]:
    """A compiler failure (inductor: no C++ compiler, a Triton error) as one `BackendError` line."""
    try:
        yield
    except torch._dynamo.exc.BackendCompilerFailed as error:
        raise BackendError(
            f"torch.compile failed on {device.type} ({_reason(error)}); run without compile (the eager path "
            "computes the same outputs)"
        ) from None


def _reason(error: Exception) -> str:
    """`Type: first line` of the error inside a compiler failure."""
    inner = getattr(error, "inner_exception", None) or error
    return f"{type(inner).__name__}: {(str(inner).strip().splitlines() or [''])[0][:300]}"


def _cudagraph_trees_ready_on_this_thread() -> None:
    """Give this thread the CUDA-graph tree state torch keeps per thread.

    Before torch 2.13 that state was set up only on the thread that imported
    `torch._inductor.cudagraph_trees` (and autograd's threads); a compiled call on any other thread
    (a server's model thread) failed a bare assert (pytorch/pytorch#123177). This sets it up as later
    torch does by itself; it changes nothing where the state exists.
    """
    from torch._inductor import cudagraph_trees

    local = cudagraph_trees.local
    if hasattr(local, "tree_manager_containers") or torch._C._is_key_in_tls("tree_manager_containers"):
        return
    local.tree_manager_containers = {}
    local.tree_manager_locks = collections.defaultdict(threading.Lock)
