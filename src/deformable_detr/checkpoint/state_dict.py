"""Strict state-dict loading with one error that lists every problem at once.

`torch.nn.Module.load_state_dict(strict=True)` stops at missing/unexpected keys and reports shape conflicts
in a separate error; the official repository instead loads with `strict=False` and prints what it skipped.
Here a checkpoint either fits the model exactly or raises `CheckpointMismatchError` naming every missing,
unexpected and mis-shaped key, so a wrong config is found in one attempt.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from deformable_detr.errors import CheckpointError

_MAX_LISTED = 12  # keys listed per category before "... and N more"


class CheckpointMismatchError(CheckpointError):
    """A state dict does not fit a model: missing, unexpected or mis-shaped keys (all listed in the message)."""

    def __init__(
        self,
        source: str,
        missing: list[str],
        unexpected: list[str],
        mis_shaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.source = source
        self.missing = missing
        self.unexpected = unexpected
        self.mis_shaped = mis_shaped
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
        if mis_shaped:
            shapes = [f"{key}: checkpoint {list(got)} vs model {list(want)}" for key, got, want in mis_shaped]
            parts.append(f"{len(mis_shaped)} mis-shaped ({_listing(shapes)})")
        super().__init__(
            f"{source}: checkpoint does not match the model: {'; '.join(parts)}; "
            "check that the config matches the checkpoint (or pass config=...)"
        )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", ... and {len(items) - _MAX_LISTED} more"
    return shown


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state_dict` into `model` only if keys and shapes match exactly.

    Args:
        model: the module to fill (parameters and persistent buffers).
        state_dict: name -> tensor, in the model's own key layout; dtypes are cast to the model's.
        source: what the tensors came from (a path or a description), used in the error message.

    Raises:
        CheckpointMismatchError: listing all missing, unexpected and mis-shaped keys at once.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = [
        (key, tuple(state_dict[key].shape), tuple(expected[key].shape))
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mis_shaped:
        raise CheckpointMismatchError(source, missing, unexpected, mis_shaped)
    model.load_state_dict(dict(state_dict), strict=True)
