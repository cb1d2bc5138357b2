"""Shared test set-up.

TRITON_INTERPRET must be set before `triton` is first imported, so Triton kernels run on CPU
tensors when no GPU is present.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def _synthetic(tmp_path_factory, name: str, num_train: int, seed: int):
    """`num_train` train and 2 val synthetic images of 64 px, rendered once per session."""
    from deformable_detr.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp(name)
    make_dataset(root, num_train=num_train, num_val=2, image_size=64, seed=seed, num_workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """4 train and 2 val images (the training and experiment tests share it)."""
    return _synthetic(tmp_path_factory, "synthetic", num_train=4, seed=0)


@pytest.fixture(scope="session")
def dataset16(tmp_path_factory):
    """16 train and 2 val images (8 batches of 2 per epoch)."""
    return _synthetic(tmp_path_factory, "synthetic16", num_train=16, seed=1)


@pytest.fixture
def one_thread():
    """torch on 1 thread for the test (much faster than 2 on a shared, busy 2-core machine), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
