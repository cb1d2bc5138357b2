"""Triton backend of multi-scale deformable attention: `forward` and `backward` on prepared inputs.

Same semantics as `reference`. The fused kernels are in `triton_kernels` (their layout and numerics);
`triton_launch` picks block sizes, compiles each specialization once and launches it. Where the
installed Triton fails to compile a case, that case warns once and runs `reference` (forward) or its
torch.func vjp (backward) from then on.

Kernels run on CUDA tensors, or on CPU tensors when `TRITON_INTERPRET=1` was set before `triton`
was first imported (how the test suite runs them without a GPU).
"""

import torch

from deformable_detr.errors import ModelInputError

from . import reference, triton_kernels, triton_launch

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
"""Dtypes of `value` (and of locations/weights) these kernels accept."""


def _prepare(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Check device and dtypes; return contiguous inputs, level tensors as int64 on value's device."""
    if not value.is_cuda and not triton_kernels.kernels_interpreted():
        raise ModelInputError(
            f"triton backend: value is on {value.device} but the Triton kernels need CUDA tensors; "
            "move the inputs to a GPU or use backend='cpu'"
        )
    for name, tensor in (
        ("value", value),
        ("sampling_locations", sampling_locations),
        ("attention_weights", attention_weights),
    ):
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise ModelInputError(
                f"triton backend: {name} has dtype {tensor.dtype}, expected one of {SUPPORTED_DTYPES}; "
                "cast it or use backend='reference'"
            )
    if sampling_locations.shape[3] != spatial_shapes.shape[0]:
        raise ModelInputError(
            f"triton backend: sampling_locations has {sampling_locations.shape[3]} levels but spatial_shapes "
            f"has {spatial_shapes.shape[0]}; they must agree"
        )
    device = value.device
    return (
        _contiguous(value),
        _contiguous(_as_int64_on(spatial_shapes, device)),
        _contiguous(_as_int64_on(level_start_index, device)),
        _contiguous(sampling_locations),
        _contiguous(attention_weights),
    )


def _contiguous(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.is_contiguous() else tensor.contiguous()


def _as_int64_on(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if tensor.dtype == torch.int64 and tensor.device == device:
        return tensor
    return tensor.to(device=device, dtype=torch.int64)


def accumulator_dtype(value: torch.Tensor) -> torch.dtype:
    """What the kernels accumulate in (and grad_value's atomics add into): fp64 for fp64 `value`, else fp32."""
    return torch.float64 if value.dtype == torch.float64 else torch.float32


def forward(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinearly sample every level at `sampling_locations` and sum with `attention_weights`.

    Args:
        value: (B, S, M, D) CUDA tensor, a dtype in `SUPPORTED_DTYPES`; levels flattened one after another.
        spatial_shapes: (L, 2) integer, (H_l, W_l) per level; sum of H_l * W_l equals S.
        level_start_index: (L,) integer, where level l starts along S.
        sampling_locations: (B, Lq, M, L, P, 2) (x, y), 0..1 over each level's map; outside reads zeros.
        attention_weights: (B, Lq, M, L, P).

    Returns:
        (B, Lq, M * D), dtype of `value`; accumulated in fp32 (fp64 for fp64 value). Where the installed
        Triton cannot compile a case, `reference` computes it (one RuntimeWarning per case).
    """
    inputs = _prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    B, _, M, D = inputs[0].shape
    _, Lq, _, L, P, _ = inputs[3].shape
    if B * Lq * M * D == 0 or L * P == 0:
        return inputs[0].new_zeros((B, Lq, M * D))  # (B, Lq, M*D)
    # The kernel stores every (row < B * Lq, head, channel < D): no need to zero the output first.
    output = torch.empty((B, Lq, M * D), dtype=inputs[0].dtype, device=inputs[0].device)  # (B, Lq, M*D)
    call = triton_launch.forward_call(*inputs, output, *triton_launch.block_sizes(B * Lq, M, D))
    if not triton_launch.launch(triton_kernels.forward_kernel, "forward", *call):
        return reference.forward(*inputs)
    return output


def backward(
    grad_output: torch.Tensor,
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of `forward` w.r.t. value, sampling_locations and attention_weights.

    Args:
        grad_output: (B, Lq, M * D), gradient of the loss w.r.t. `forward`'s output; any float dtype.
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights: as in `forward`.

    Returns:
        grad_value (B, S, M, D) in value's dtype (accumulated with fp32 atomics, fp64 for fp64 value),
        grad_sampling_locations (B, Lq, M, L, P, 2) in sampling_locations' dtype,
        grad_attention_weights (B, Lq, M, L, P) in attention_weights' dtype.
        Where the installed Triton cannot compile a case, `reference` differentiated by torch.func
        computes them (one RuntimeWarning per case).
    """
    inputs = _prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    value, _, _, sampling_locations, attention_weights = inputs
    B, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    grad_output = _contiguous(grad_output if grad_output.device == value.device else grad_output.to(value.device))
    grad_value = torch.zeros_like(value, dtype=accumulator_dtype(value))  # (B, S, M, D), the atomics add to it
    if B * Lq * M * D * L * P == 0:
        return grad_value.to(value.dtype), torch.zeros_like(sampling_locations), torch.zeros_like(attention_weights)
    # The kernel stores every (row < B * Lq, head, level, point) of these two: no need to zero them first.
    grad_sampling_locations = torch.empty_like(sampling_locations)  # (B, Lq, M, L, P, 2)
    grad_attention_weights = torch.empty_like(attention_weights)  # (B, Lq, M, L, P)
    blocks = triton_launch.block_sizes(B * Lq, M, D)
    call = triton_launch.backward_call(
        grad_output, *inputs, grad_value, grad_sampling_locations, grad_attention_weights, *blocks
    )
    if not triton_launch.launch(triton_kernels.backward_kernel, "backward", *call):
        _, vjp = torch.func.vjp(  # torch.func works below the autograd key, inside the custom op's backward too
            lambda v, loc, w: reference.forward(v, inputs[1], inputs[2], loc, w),
            value,
            sampling_locations,
            attention_weights,
        )
        return vjp(grad_output.to(value.dtype))
    return grad_value.to(value.dtype), grad_sampling_locations, grad_attention_weights
