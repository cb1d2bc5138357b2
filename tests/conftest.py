"""Shared test set-up.

TRITON_INTERPRET must be set before `triton` is first imported, so Triton kernels run on CPU
tensors when no GPU is present.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
