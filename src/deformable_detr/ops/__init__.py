"""Multi-scale deformable attention (Zhu et al., 2021): one function, several backends.

Shape letters used across the package: B batch, H x W image, H_l x W_l level l, C = d_model,
M heads, D = C / M, L levels, P points, S = sum_l H_l * W_l, Lq queries, K classes,
T targets in one image.

Backends (each a module with `forward(...)` and, for the fused ones, `backward(...)`):
    reference  `F.grid_sample` per level (reference.py); any device, the oracle for the others.
    cpu        fused C++ kernel (cpu.py, csrc/), compiled on first use and cached on disk.
    triton     Triton kernels for CUDA tensors (triton.py; kernels in triton_kernels.py); runs on CPU tensors under TRITON_INTERPRET=1.
    gather     bilinear sampling as index arithmetic + Gather + MatMul (gather.py); plain tensor ops
               whose shapes follow the inputs: the export path (standard ONNX ops, no GridSample).
    auto       cpu for CPU tensors, triton for CUDA tensors, reference where those cannot run
               (with one warning saying why); gather while exporting to ONNX (either exporter)
               and under torch.jit.trace; never fails where reference works.

The fused backends are wrapped in one `torch.library` custom op, `deformable_detr::ms_deform_attn`
(backward: `deformable_detr::ms_deform_attn_backward`), with fake implementations and autograd,
so `torch.compile(..., fullgraph=True)` and `torch.export` see a single op. The backend name is
an argument of the op; under compilation `auto` is resolved when the op runs.
"""

import importlib
import os
import warnings
from types import ModuleType

import torch

from deformable_detr.errors import BackendError, ConfigError, ModelInputError

from . import gather, reference

BACKENDS = ("auto", "reference", "cpu", "triton", "gather")

__all__ = ["BACKENDS", "multi_scale_deformable_attention"]

_warned: set[str] = set()


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Sample each level bilinearly at the given points and sum the samples with the given weights.

    Args:
        value: (B, S, M, D) projected features of all levels, flattened level by level;
            float32, float64, bfloat16 or float16.
        spatial_shapes: (L, 2) integer, (H_l, W_l) per level; sum of H_l * W_l must equal S.
        level_start_index: (L,) integer, where level l starts along S (0, H_0 * W_0, ...).
        sampling_locations: (B, Lq, M, L, P, 2) (x, y), 0..1 over each level's padded map
            (pixel centre of column j at (j + 0.5) / W_l); points outside read zeros. Dtype of `value`.
        attention_weights: (B, Lq, M, L, P), already softmaxed over L * P. Dtype of `value`.
        backend: "auto", "reference", "cpu", "triton" or "gather".

    Returns:
        (B, Lq, M * D), dtype of `value`. Differentiable w.r.t. value, locations and weights.
        Exactly `F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)` per
        level at grid `2 * loc - 1`, weighted and summed over levels and points.

    Raises:
        ValueError: mismatched shapes, ranks or dtypes, an unknown backend, or a backend that
            cannot take tensors on this device.
        RuntimeError: backend="cpu" where the fused kernel cannot be built (the reason is given).
    """
    spatial_shapes, level_start_index = _check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend
    )
    B, _, M, D = value.shape
    Lq = sampling_locations.shape[1]
    if not torch.jit.is_tracing() and Lq == 0:
        return value[:, :0].reshape(B, 0, M * D).clone()  # (B, 0, M*D), still attached to autograd
    if backend == "auto" and (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
        backend = "gather"  # exporting: plain tensor ops with dynamic shapes, standard ONNX ops only
    if backend == "gather":
        return gather.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if _is_tracing():
        # Dynamo / export: stay inside one opaque op; `auto` is resolved when the op runs.
        return torch.ops.deformable_detr.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend
        )
    chosen = _resolve_backend(backend, value)
    if chosen == "reference":  # plain PyTorch: autograd (double backward included) and tracing work natively
        return reference.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return torch.ops.deformable_detr.ms_deform_attn(
        value.contiguous(),
        spatial_shapes,
        level_start_index,
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
        chosen,
    )


# ----------------------------------------------------------------------------------------------
# Validation


def _is_tracing() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.compiler.is_compiling() or is_exporting()


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raise a one-line ValueError for any inconsistency; return the shapes as int64 on value's device."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    if torch.jit.is_tracing():  # shapes are traced values here: checking them would only bake in constants
        return spatial_shapes, level_start_index
    if value.dim() != 4:
        raise ModelInputError(f"value must be (B, S, M, D), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ModelInputError(
            f"sampling_locations must be (B, Lq, M, L, P, 2), got shape {tuple(sampling_locations.shape)}"
        )
    if attention_weights.dim() != 5:
        raise ModelInputError(f"attention_weights must be (B, Lq, M, L, P), got shape {tuple(attention_weights.shape)}")
    B, S, M, D = value.shape
    L = sampling_locations.shape[3]
    if sampling_locations.shape[0] != B or sampling_locations.shape[2] != M:
        raise ModelInputError(
            f"sampling_locations {tuple(sampling_locations.shape)} does not match value {tuple(value.shape)} "
            f"in B or M; expected (B={B}, Lq, M={M}, L, P, 2)"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ModelInputError(
            f"attention_weights {tuple(attention_weights.shape)} must be sampling_locations' shape without the "
            f"last dim, {tuple(sampling_locations.shape[:-1])}"
        )
    if spatial_shapes.dim() != 2 or spatial_shapes.shape != (L, 2):
        raise ModelInputError(
            f"spatial_shapes must be (L={L}, 2) (H_l, W_l) per level, got shape {tuple(spatial_shapes.shape)}"
        )
    if level_start_index.shape != (L,):
        raise ModelInputError(f"level_start_index must be (L={L},), got shape {tuple(level_start_index.shape)}")
    if spatial_shapes.dtype.is_floating_point or level_start_index.dtype.is_floating_point:
        raise ModelInputError(
            f"spatial_shapes and level_start_index must be integer tensors, got {spatial_shapes.dtype} and "
            f"{level_start_index.dtype}; use torch.int64"
        )
    if not value.dtype.is_floating_point:
        raise ModelInputError(f"value must be a floating-point tensor, got {value.dtype}")
    if sampling_locations.dtype != value.dtype or attention_weights.dtype != value.dtype:
        raise ModelInputError(
            f"value, sampling_locations and attention_weights must share a dtype, got {value.dtype}, "
            f"{sampling_locations.dtype} and {attention_weights.dtype}; cast them to one dtype"
        )
    if sampling_locations.device != value.device or attention_weights.device != value.device:
        raise ModelInputError(
            f"value, sampling_locations and attention_weights must be on one device, got {value.device}, "
            f"{sampling_locations.device} and {attention_weights.device}"
        )
    if backend == "cpu" and value.device.type != "cpu":
        raise ConfigError(f"backend='cpu' needs CPU tensors, got value on {value.device}; use 'auto' or 'triton'")
    if backend == "triton" and value.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ConfigError(
            f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got value on {value.device}; use 'auto'"
        )
    if not _is_tracing() and spatial_shapes.device.type == "cpu":  # data checks: free on the CPU, a sync on a GPU
        sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
        if sum(sizes) != S:
            raise ModelInputError(
                f"sum of H_l * W_l over spatial_shapes {spatial_shapes.tolist()} is {sum(sizes)}, but value has "
                f"S = {S}; value must hold every level's pixels"
            )
        starts = [sum(sizes[:level]) for level in range(L)]
        if level_start_index.tolist() != starts:
            raise ModelInputError(
                f"level_start_index {level_start_index.tolist()} is inconsistent with spatial_shapes; expected {starts}"
            )
    if spatial_shapes.dtype != torch.int64 or spatial_shapes.device != value.device:
        spatial_shapes = spatial_shapes.to(device=value.device, dtype=torch.int64)
    if level_start_index.dtype != torch.int64 or level_start_index.device != value.device:
        level_start_index = level_start_index.to(device=value.device, dtype=torch.int64)
    return spatial_shapes, level_start_index


# ----------------------------------------------------------------------------------------------
# Backend choice


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _triton_module() -> ModuleType:
    """The Triton backend module; raises BackendError (a RuntimeError, with the reason) where it cannot be imported."""
    try:
        module = importlib.import_module(f"{__name__}.triton")
    except Exception as error:  # triton not installed, or an incompatible version
        raise BackendError(f"the triton backend is unavailable ({type(error).__name__}: {error})") from error
    if not (hasattr(module, "forward") and hasattr(module, "backward")):
        raise BackendError("the triton backend is unavailable (ops/triton.py lacks forward/backward)")
    return module


def _resolve_backend(backend: str, value: torch.Tensor) -> str:
    """Map `auto` to a concrete backend for `value`'s device and dtype."""
    if backend != "auto":
        return backend
    if value.device.type == "cpu":
        from . import cpu

        try:
            cpu.load_extension()
            return "cpu"
        except RuntimeError as error:
            _warn_once(f"backend='auto' falls back to 'reference' on the CPU: {error}")
            return "reference"
    if value.device.type == "cuda":
        try:
            _triton_module()
            return "triton"
        except RuntimeError as error:
            _warn_once(f"backend='auto' falls back to 'reference' on CUDA: {error}; pip install triton")
            return "reference"
    return "reference"


def _backend_module(backend: str) -> ModuleType:
    if backend == "cpu":
        from . import cpu

        return cpu
    if backend == "triton":
        return _triton_module()
    if backend == "gather":
        return gather
    return reference


# ----------------------------------------------------------------------------------------------
# torch.library registration


@torch.library.custom_op("deformable_detr::ms_deform_attn", mutates_args=())
def _ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str,
) -> torch.Tensor:
    """The operator as one opaque op: (B, S, M, D) ... -> (B, Lq, M * D)."""
    module = _backend_module(_resolve_backend(backend, value))
    return module.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


@_ms_deform_attn.register_fake
def _ms_deform_attn_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend):
    B, _, M, D = value.shape
    return value.new_empty((B, sampling_locations.shape[1], M * D))  # (B, Lq, M*D)


@torch.library.custom_op("deformable_detr::ms_deform_attn_backward", mutates_args=())
def _ms_deform_attn_backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. (value (B, S, M, D), sampling_locations (B, Lq, M, L, P, 2), attention_weights (B, Lq, M, L, P))."""
    chosen = _resolve_backend(backend, value)
    if chosen in ("reference", "gather"):  # differentiate the plain-op graph (torch.func works below the autograd key)
        plain = _backend_module(chosen)
        _, vjp = torch.func.vjp(
            lambda v, loc, w: plain.forward(v, spatial_shapes, level_start_index, loc, w),
            value,
            sampling_locations,
            attention_weights,
        )
        return vjp(grad_output)
    return _backend_module(chosen).backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


@_ms_deform_attn_backward.register_fake
def _ms_deform_attn_backward_fake(
    grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend
):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _setup_context(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    ctx.backend = backend


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_sampling_locations, grad_attention_weights = torch.ops.deformable_detr.ms_deform_attn_backward(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        ctx.backend,
    )
    return grad_value, None, None, grad_sampling_locations, grad_attention_weights, None


_ms_deform_attn.register_autograd(_backward, setup_context=_setup_context)
