"""Multi-scale deformable attention as an nn.Module (the paper's MSDeformAttn, Sec. 4.1, Eq. 3).

Each query predicts, per head, level and point, an offset from its reference point and an
attention weight (softmaxed over levels x points); the operator samples the projected value
maps there and sums. Parameter names and shapes are the reference implementation's, so its
checkpoints load key for key.
"""

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from deformable_detr.errors import ConfigError, ModelInputError
from deformable_detr.ops import BACKENDS, multi_scale_deformable_attention


class MultiScaleDeformableAttention(nn.Module):
    """Attend from each query to n_points sampled points per head and level around its reference point.

    Args:
        d_model: C, channels of queries and values; must be divisible by n_heads.
        n_levels: L, feature levels sampled.
        n_heads: M, attention heads; each has D = C / M channels.
        n_points: P, sampling points per head and level.
        backend: operator backend, "auto", "reference", "cpu" or "triton" (see `deformable_detr.ops`).
    """

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, backend: str = "auto"
    ) -> None:
        super().__init__()
        for name, count in (("d_model", d_model), ("n_levels", n_levels), ("n_heads", n_heads), ("n_points", n_points)):
            if count < 1:
                raise ConfigError(f"{name} must be >= 1, got {count}")
        if d_model % n_heads != 0:
            raise ConfigError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}); change one of them")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.backend = backend
        self.record = False  # see `recording_sampling`
        self.last_sampling: dict[str, torch.Tensor] | None = None
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The paper's initialisation: offsets start on a ring of head directions, uniform attention.

        sampling_offsets: weight 0; bias for head m points along angle 2*pi*m/M, the direction
        scaled so its larger coordinate is 1 (a square ring), point i at distance i + 1 (in
        pixels of each level). attention_weights: weight and bias 0 (uniform softmax).
        value_proj, output_proj: xavier-uniform weight, bias 0.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float64) * (2 * math.pi / self.n_heads)  # (M,)
        directions = torch.stack([angles.cos(), angles.sin()], -1)  # (M, 2)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float64).view(1, 1, -1, 1)  # (1, 1, P, 1)
        ring = directions.view(self.n_heads, 1, 1, 2) * steps  # (M, 1, P, 2)
        ring = ring.expand(self.n_heads, self.n_levels, self.n_points, 2)  # (M, L, P, 2)
        self.sampling_offsets.bias.copy_(ring.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value_input: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample the value maps around each query's reference points and mix the samples.

        Args:
            query: (B, Lq, C) queries (content + position embedding).
            reference_points: (B, Lq, L, 2) normalized (x, y) in [0, 1] per level, offsets in pixels
                of each level (divided by (W_l, H_l)); or (B, Lq, L, 4) normalized boxes
                (cx, cy, w, h), offsets scaled by (w, h) / P * 0.5.
            value_input: (B, S, C) flattened features of all levels, S = sum_l H_l * W_l.
            spatial_shapes: (L, 2) int64, (H_l, W_l) per level.
            level_start_index: (L,) int64, where level l starts along S.
            padding_mask: (B, S) bool, True = padding (value zeroed there); None = all valid.

        Returns:
            (B, Lq, C).
        """
        B, Lq, C = query.shape
        S = value_input.shape[1]
        M, L, P = self.n_heads, self.n_levels, self.n_points
        if C != self.d_model or value_input.shape[-1] != self.d_model:
            raise ModelInputError(
                f"query {tuple(query.shape)} and value_input {tuple(value_input.shape)} must have "
                f"d_model = {self.d_model} channels"
            )
        if value_input.dim() != 3 or value_input.shape[0] != B:
            raise ModelInputError(f"value_input must be (B={B}, S, C), got shape {tuple(value_input.shape)}")
        if reference_points.shape[:3] != (B, Lq, L) or reference_points.shape[-1] not in (2, 4):
            raise ModelInputError(
                f"reference_points must be (B={B}, Lq={Lq}, L={L}, 2 or 4), got shape {tuple(reference_points.shape)}"
            )
        if padding_mask is not None and padding_mask.shape != (B, S):
            raise ModelInputError(f"padding_mask must be (B={B}, S={S}), got shape {tuple(padding_mask.shape)}")

        value = self.value_proj(value_input)  # (B, S, C)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(B, S, M, C // M)  # (B, S, M, D)
        sampling_offsets = self.sampling_offsets(query).view(B, Lq, M, L, P, 2)
        attention_weights = self.attention_weights(query).view(B, Lq, M, L * P)
        attention_weights = F.softmax(attention_weights, -1).view(B, Lq, M, L, P)
        if reference_points.shape[-1] == 2:
            offset_normalizer = spatial_shapes.flip(-1).to(sampling_offsets.dtype)  # (L, 2) as (W_l, H_l)
            sampling_locations = (
                reference_points[:, :, None, :, None, :]
                + sampling_offsets / offset_normalizer[None, None, None, :, None, :]
            )  # (B, Lq, M, L, P, 2)
        else:
            sampling_locations = (
                reference_points[:, :, None, :, None, :2]
                + sampling_offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5
            )  # (B, Lq, M, L, P, 2)
        if self.record:
            self.last_sampling = {
                "reference_points": reference_points.detach(),
                "spatial_shapes": spatial_shapes,
                "sampling_locations": sampling_locations.detach(),
                "attention_weights": attention_weights.detach(),
            }
        # Under autocast value is bfloat16 but locations follow the float32 reference points: run the
        # operator in the widest of the three (a bfloat16 location is off by up to half a pixel).
        dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
        output = multi_scale_deformable_attention(
            value.to(dtype),
            spatial_shapes,
            level_start_index,
            sampling_locations.to(dtype),
            attention_weights.to(dtype),
            backend=self.backend,
        )  # (B, Lq, C)
        return self.output_proj(output)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
            f"n_points={self.n_points}, backend={self.backend!r}"
        )


@contextmanager
def recording_sampling(modules: Iterable[nn.Module]) -> Iterator[list[MultiScaleDeformableAttention]]:
    """Within the block, every `MultiScaleDeformableAttention` among `modules` (and their children) keeps
    its last call's `last_sampling`: {"reference_points" (B, Lq, L, 2 | 4), "spatial_shapes" (L, 2),
    "sampling_locations" (B, Lq, M, L, P, 2) (x, y) in [0, 1], "attention_weights" (B, Lq, M, L, P)}.

    Yields the attention modules in `modules()` order; afterwards recording stops and the records stay.
    """
    attentions = [m for module in modules for m in module.modules() if isinstance(m, MultiScaleDeformableAttention)]
    for attention in attentions:
        attention.record, attention.last_sampling = True, None
    try:
        yield attentions
    finally:
        for attention in attentions:
            attention.record = False
