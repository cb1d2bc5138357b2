"""Fixtures of the server tests (helpers in serve_helpers.py)."""

from __future__ import annotations

import pytest
from serve_helpers import running_server, tiny_model

from deformable_detr.serving.runner import ModelRunner


@pytest.fixture(scope="session")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def runner(model) -> ModelRunner:
    return ModelRunner(model)


@pytest.fixture(scope="module")
def server_url(runner):
    """A server with the tiny model, 1 MB upload limit, 1 Mpx image limit."""
    with running_server(runner, max_upload_mb=1.0, max_image_pixels=1_000_000) as (url, _):
        yield url
