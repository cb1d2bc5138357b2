"""Shared test set-up.

TRITON_INTERPRET must be set before `triton` is first imported, so Triton kernels run on CPU
tensors when no GPU is present.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """4 train and 2 val synthetic images of 64 px (the training and experiment tests share it)."""
    from deformable_detr.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, num_train=4, num_val=2, image_size=64, seed=0, num_workers=1)
    return root


@pytest.fixture
def one_thread():
    """torch on 1 thread for the test (much faster than 2 on a shared, busy 2-core machine), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
