"""Checkpoint interop: official Deformable-DETR files, Hugging Face transformers models, strict loading.

    from deformable_detr.interop import load_official, load_transformers
    model = load_official("checkpoint.pth")        # same as DeformableDETR.from_official(...)
    model = load_transformers("hf_dir/")           # same as DeformableDETR.from_transformers(...)
"""

from deformable_detr.interop.official import load_official
from deformable_detr.models.state_dict import CheckpointMismatchError, load_state_dict_strict
from deformable_detr.interop.transformers import load_transformers

__all__ = ["CheckpointMismatchError", "load_official", "load_state_dict_strict", "load_transformers"]
