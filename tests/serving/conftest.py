"""Fixtures of the server tests (helpers in serve_helpers.py).

The server is the optional `serve` extra. Without it (fastapi, uvicorn) or httpx the test modules cannot be
imported and are reported as skipped (tests/conftest.py; which fails the run unless DDETR_ALLOW_SKIPS=1), so
this file imports them only where they are installed.
"""

from __future__ import annotations

import pytest

try:
    from serve_helpers import running_server, tiny_model

    from deformable_detr.serving.runner import ModelRunner
except ModuleNotFoundError:  # the serve extra is missing: every test module here skips saying which module
    pass


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
