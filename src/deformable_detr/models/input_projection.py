"""Input projections: each backbone level (and each extra level) to d_model channels, as the reference code.

projections = input_projections([512, 1024, 2048], num_levels=4, d_model=256)   # 3 backbone levels + 1 extra
"""

from __future__ import annotations

from torch import nn


def input_projections(backbone_channels: list[int], num_levels: int, d_model: int) -> nn.ModuleList:
    """1x1 conv + GroupNorm(32) per backbone level; each further level a 3x3 stride-2 conv + GroupNorm,
    the first on the raw last backbone map, the others on the previous projected level."""
    projections = [nn.Sequential(nn.Conv2d(c, d_model, 1), nn.GroupNorm(32, d_model)) for c in backbone_channels]
    in_channels = backbone_channels[-1]
    for _ in range(num_levels - len(backbone_channels)):
        projections.append(
            nn.Sequential(nn.Conv2d(in_channels, d_model, 3, stride=2, padding=1), nn.GroupNorm(32, d_model))
        )
        in_channels = d_model
    for projection in projections:  # as the reference code
        nn.init.xavier_uniform_(projection[0].weight, gain=1)
        nn.init.constant_(projection[0].bias, 0)
    return nn.ModuleList(projections)
