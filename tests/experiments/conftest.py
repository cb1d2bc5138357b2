"""Fixtures of the experiment tests: a tiny generated dataset, torch on one thread."""

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """4 train and 2 val synthetic images of 64 px."""
    from deformable_detr.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, num_train=4, num_val=2, image_size=64, seed=0, num_workers=1)
    return root


@pytest.fixture
def one_thread():
    """torch on 1 thread for the test (faster than 2 on a shared 2-core machine), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
