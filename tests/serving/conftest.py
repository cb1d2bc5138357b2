"""Fixtures of the server tests (helpers in serve_helpers.py).

The server is the optional `serve` extra: without it (fastapi, uvicorn) or httpx these tests skip (which
tests/conftest.py turns into a failure unless DDETR_ALLOW_SKIPS=1).
"""

from __future__ import annotations

import pytest

for _module in ("fastapi", "uvicorn", "httpx"):
    pytest.importorskip(_module, reason=f"{_module} is not installed (pip install 'deformable-detr[serve]' httpx)")

from serve_helpers import running_server, tiny_model  # noqa: E402

from deformable_detr.serving.runner import ModelRunner  # noqa: E402


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
