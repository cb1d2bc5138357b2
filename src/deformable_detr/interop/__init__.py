"""Checkpoint converters: official Deformable-DETR files and Hugging Face models <-> (ModelConfig, state_dict).

Converters only rename and check tensors; `DeformableDETR.from_state_dict` builds the model, and
`deformable_detr.load(path)` recognises the format and does both (see docs/interop.md).

    from deformable_detr.interop import official_to_ours, transformers_to_ours
    config, state_dict = official_to_ours("r50_deformable_detr-checkpoint.pth")
    model = DeformableDETR.from_state_dict(config, state_dict)
"""

from deformable_detr.interop.huggingface import ours_to_transformers, transformers_to_ours
from deformable_detr.interop.official import official_to_ours, ours_to_official

__all__ = ["official_to_ours", "ours_to_official", "ours_to_transformers", "transformers_to_ours"]
