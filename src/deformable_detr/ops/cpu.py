"""CPU backend: a fused C++ kernel (csrc/ms_deform_attn_cpu.cpp), compiled on first use.

The kernel is built with `torch.utils.cpp_extension.load` the first time it is needed and cached
in torch's extensions directory (`$TORCH_EXTENSIONS_DIR`, by default ~/.cache/torch_extensions),
so later processes load it in well under a second. The build is logged as one line on stderr.
The extension's name carries a hash of the source, the flags and the CPU's features, so an edited
kernel or a different machine never loads a stale binary.

Parallel over (batch, query) in the forward and over (batch, head) in the backward with
`at::parallel_for`, so `torch.set_num_threads` applies; arithmetic in float32 for float16 and
bfloat16 inputs, float64 for float64.
"""

import hashlib
import logging
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

from deformable_detr.errors import BackendError

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).parent / "csrc" / "ms_deform_attn_cpu.cpp"
if (
    platform.system() == "Darwin"
):  # Apple clang: no -fopenmp (the kernel then runs on one thread), no -march=native on arm64
    _CFLAGS = ["-O3", "-ffp-contract=fast"] + (["-march=native"] if platform.machine() == "x86_64" else [])
    _LDFLAGS: list[str] = []
else:  # -march=native is safe: the binary is built for, and cached on, this machine (see _extension_name)
    _CFLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=fast"]
    _LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_extension: ModuleType | None = None
_build_error: str | None = None


def _cpu_features() -> str:
    """The CPU's instruction-set flags (they decide what -march=native emits)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _extension_name() -> str:
    digest = hashlib.sha256()
    # The source's path too: torch's build file records it, so two checkouts sharing one name would rebuild in turn.
    for part in (
        _SOURCE.read_bytes(),
        str(_SOURCE.resolve()).encode(),
        " ".join(_CFLAGS).encode(),
        _cpu_features().encode(),
        torch.__version__.encode(),
    ):
        digest.update(part)
    return f"deformable_detr_ms_deform_attn_cpu_{digest.hexdigest()[:12]}"


def _is_cached(name: str) -> bool:
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").exists()
    except Exception:  # a private helper of torch; if it moves, we only lose the "compiling" line's accuracy
        return False


STALE_LOCK_SECONDS = 600  # a build takes ~30-140 s; an older lock was left by a build that was killed


def _remove_stale_lock(name: str) -> None:
    """Delete the build folder's `lock` when it is older than STALE_LOCK_SECONDS.

    torch's extension builder holds that file while it compiles and waits, forever, while it exists; a
    build killed half-way (Ctrl-C, SIGKILL, a CI timeout) leaves it behind and every later process hangs.
    """
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        age = time.time() - lock.stat().st_mtime
    except Exception:  # no lock (the usual case), or torch's private helper moved
        return
    if age > STALE_LOCK_SECONDS:
        logger.warning("removing a stale build lock left by an interrupted build (%.0f s old): %s", age, lock)
        lock.unlink(missing_ok=True)


def _build() -> ModuleType:
    from torch.utils.cpp_extension import load

    if shutil.which("ninja") is None:  # a venv used without activation: ninja's binary is not on PATH
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
    name = _extension_name()
    _remove_stale_lock(name)
    if not _is_cached(name):
        logger.warning("compiling the fused CPU deformable-attention kernel (one time, ~30 s)...")
    return load(name=name, sources=[str(_SOURCE)], extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS, verbose=False)


def load_extension() -> ModuleType:
    """Return the compiled kernel, building it on first use.

    Raises:
        RuntimeError: the kernel cannot be built here (no compiler, no ninja, a build error); the
            message holds the reason. Later calls raise the same error without retrying.
    """
    global _extension, _build_error
    with _lock:
        if _extension is None and _build_error is None:
            try:
                _extension = _build()
            except Exception as error:  # compiler missing, build failure, ...: remembered, reported by callers
                reason = str(error).strip().splitlines()
                _build_error = f"{type(error).__name__}: {reason[-1] if reason else ''}"
        if _extension is None:
            raise BackendError(f"the fused CPU kernel could not be built ({_build_error}); use backend='reference'")
        return _extension


def is_available() -> bool:
    """True when the fused kernel is built or can be built now (builds it if needed)."""
    try:
        load_extension()
        return True
    except RuntimeError:
        return False


def forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Fused forward; arguments and result as `deformable_detr.ops.multi_scale_deformable_attention`.

    Args:
        value: (B, S, M, D) CPU tensor, float32 / float64 / bfloat16 / float16.
        spatial_shapes: (L, 2) int64, (H_l, W_l) per level.
        level_start_index: (L,) int64.
        sampling_locations: (B, Lq, M, L, P, 2), (x, y) normalized, dtype of `value`.
        attention_weights: (B, Lq, M, L, P), dtype of `value`.

    Returns:
        (B, Lq, M * D), dtype of `value`.
    """
    return load_extension().forward(
        value.contiguous(),
        spatial_shapes.contiguous(),
        level_start_index.contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
    )


def backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused backward: gradients w.r.t. value, sampling_locations and attention_weights.

    Args:
        grad_output: (B, Lq, M * D), dtype of `value`.
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights: as in `forward`.

    Returns:
        (grad_value (B, S, M, D), grad_sampling_locations (B, Lq, M, L, P, 2),
        grad_attention_weights (B, Lq, M, L, P)), each in its input's dtype.
    """
    grad_value, grad_sampling_locations, grad_attention_weights = load_extension().backward(
        grad_output.contiguous(),
        value.contiguous(),
        spatial_shapes.contiguous(),
        level_start_index.contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
    )
    return grad_value, grad_sampling_locations, grad_attention_weights
