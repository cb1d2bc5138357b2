"""/openapi.json lists for each operation exactly the status codes it can answer: the README's endpoint
table (written out below), and each listed code produced by a real request while no probe gets an unlisted one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import HeldRunner, encode, png_claiming, running_server, scene, wait_for

from deformable_detr.serving import ServeConfig, create_app

# The README's endpoint table without an API key (500, an internal error, is possible anywhere and not listed).
DOCUMENTED = {
    ("get", "/v1/model"): {200},
    ("post", "/v1/detect"): {200, 400, 413, 415, 422, 503},
    ("post", "/v1/explain"): {200, 400, 413, 415, 422, 503},
    ("get", "/health"): {200},
    ("get", "/metrics"): {200},
}


def listed(schema: dict) -> dict[tuple[str, str], set[int]]:
    return {
        (method, path): {int(code) for code in operation["responses"]}
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_the_schema_lists_the_documented_responses(runner, api_key):
    schema = create_app(ServeConfig(checkpoint="<injected>", api_key=api_key), runner).openapi()
    with_key = {401} if api_key else set()  # only a server with a key can answer 401, and only on /v1/*
    assert listed(schema) == {
        op: codes | (with_key if op[1].startswith("/v1/") else set()) for op, codes in DOCUMENTED.items()
    }
    for operation in ("/v1/detect", "/v1/explain"):
        error = schema["paths"][operation]["post"]["responses"]["413"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorAnswer"}  # {"detail": "one line"}, as sent


def test_each_listed_response_is_really_given(runner):
    held = HeldRunner(runner)
    key = {"Authorization": "Bearer s3cret"}
    good, big = encode(scene(64, 48), "PNG"), b"\0" * (2 * 1024 * 1024)
    uploads = {  # expected status -> (upload, form fields)
        200: (("ok.png", good), {"top_k": 1}),
        400: (("empty.png", b""), {}),
        413: (("big.png", big), {}),
        415: (("notes.txt", b"just text"), {}),
        422: (("ok.png", good), {"threshold": 5, "pixel_x": 1}),
    }
    with running_server(held, api_key="s3cret", max_upload_mb=1.0, batch_size=1, max_queue=1) as (url, _):
        seen: dict[tuple[str, str], set[int]] = {op: set() for op in DOCUMENTED}

        def call(method: str, path: str, headers: dict = key, **kwargs) -> httpx.Response:
            response = httpx.request(method.upper(), url + path, headers=headers, timeout=60, **kwargs)
            seen[(method, path)].add(response.status_code)
            return response

        call("get", "/v1/model")
        call("get", "/v1/model", headers={})
        call("get", "/v1/model", content=big)  # a GET's body is not read: no 413
        call("get", "/health")
        call("get", "/metrics")
        for path in ("/v1/detect", "/v1/explain"):
            call("post", path, headers={}, files={"image": ("ok.png", good)})
            for status, (upload, fields) in uploads.items():
                assert call("post", path, files={"image": upload}, data=fields).status_code == status, (path, status)
            call("post", path, files={"image": ("bomb.png", png_claiming(50_000, 50_000))})  # 413 too
        held.release.clear()  # the model is busy: one request runs, one waits, the queue (1) is full
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(call, "post", "/v1/detect", files={"image": ("ok.png", good)})
            wait_for(url, "running", 1)
            waiting = pool.submit(call, "post", "/v1/detect", files={"image": ("ok.png", good)})
            wait_for(url, "queue_depth", 1)
            for path in ("/v1/detect", "/v1/explain"):
                assert call("post", path, files={"image": ("ok.png", good)}).status_code == 503, path
            held.release.set()
            assert running.result().status_code == waiting.result().status_code == 200
        schema = httpx.get(url + "/openapi.json").json()
    assert seen == listed(schema)
