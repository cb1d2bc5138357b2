"""Fixtures of the interop tests; the HF reference models are built in hf_reference.py."""

import pytest


@pytest.fixture(scope="module")
def batch():
    """images (2, 3, 64, 80), pixel_mask (2, 64, 80) int64 1 = valid: two images of different sizes."""
    from hf_reference import padded_batch

    return padded_batch()
