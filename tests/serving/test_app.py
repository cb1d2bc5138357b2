"""The server over real HTTP: detections equal single-image prediction; every bad input answered cleanly."""

from __future__ import annotations

import io
import math

import httpx
import pytest
import torch
from PIL import Image
from serve_helpers import CATEGORIES, PREPROCESS, encode, png_claiming, running_server, scene, single_image_detections


def post(
    url: str,
    path: str,
    data: bytes | None,
    name: str = "image.png",
    mime: str = "image/png",
    headers: dict | None = None,
    **fields,
) -> httpx.Response:
    files = {"image": (name, data, mime)} if data is not None else None
    return httpx.post(url + path, files=files, data={k: str(v) for k, v in fields.items()}, headers=headers, timeout=60)


def assert_one_line_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in response.text
    for word in words:
        assert word in detail, detail


@pytest.mark.parametrize(
    "fmt, mime, size",
    [
        ("PNG", "image/png", (120, 90)),
        ("JPEG", "image/jpeg", (64, 200)),
        ("BMP", "image/bmp", (97, 97)),
        ("WEBP", "image/webp", (300, 40)),
        ("GIF", "image/gif", (50, 70)),
        ("TIFF", "image/tiff", (33, 160)),
    ],
)
def test_detect_equals_single_image_prediction(server_url, model, fmt, mime, size):
    data = encode(scene(*size, seed=size[0]), fmt)
    response = post(server_url, "/v1/detect", data, f"x.{fmt.lower()}", mime, threshold=0)
    assert response.status_code == 200, response.text
    body = response.json()
    decoded = Image.open(io.BytesIO(data)).convert("RGB")  # lossy formats: compare on the decoded pixels
    expected = single_image_detections(model, decoded)
    assert body["image"] == {"width": size[0], "height": size[1]}
    detections = body["detections"]
    assert len(detections) == len(expected["scores"]) == 100
    torch.testing.assert_close(torch.tensor([d["score"] for d in detections]), expected["scores"], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor([d["box_xyxy"] for d in detections]), expected["boxes"], rtol=0, atol=1e-3)
    assert [d["label"] for d in detections] == [CATEGORIES[label]["id"] for label in expected["labels"].tolist()]
    assert [d["name"] for d in detections] == [CATEGORIES[label]["name"] for label in expected["labels"]]
    assert set(detections[0]) == {"box_xyxy", "label", "name", "score"}  # `Detections.to_dict()`'s items
    assert {"decode_ms", "queue_ms", "model_ms", "total_ms", "batch_size"} <= set(body["timing"])
    predicted = model.predict(decoded, threshold=0)[0]  # the library's own answer for this image alone
    torch.testing.assert_close(torch.tensor([d["box_xyxy"] for d in detections]), predicted.boxes, rtol=0, atol=1e-3)
    torch.testing.assert_close(torch.tensor([d["score"] for d in detections]), predicted.scores, rtol=0, atol=1e-5)
    assert [d["name"] for d in detections] == predicted.names


def test_threshold_and_top_k_filter_the_ranking(server_url):
    data = encode(scene(80, 60), "PNG")
    everything = post(server_url, "/v1/detect", data, threshold=0).json()["detections"]
    kept = post(server_url, "/v1/detect", data, threshold=0.5, top_k=7).json()["detections"]
    expected = [d for d in everything if d["score"] >= 0.5][:7]
    assert kept == expected and 0 < len(kept) <= 7


def test_explain_gives_points_of_detected_queries_and_normalised_weights(server_url, model):
    data = encode(scene(120, 90), "PNG")
    detections = post(server_url, "/v1/detect", data, threshold=0).json()["detections"]
    response = post(server_url, "/v1/explain", data, threshold=0, top_k=3, pixel_x=10, pixel_y=20)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (120, 90)
    assert len(body["levels"]) == model.config.num_feature_levels
    assert len(body["detections"]) == 3 and body["pixel"]["pixel"] == [10, 20]
    assert len({d["query"] for d in body["detections"]}) == 3  # one per query
    attention = model.transformer.decoder.layers[-1].cross_attn
    for explained in body["detections"]:
        same = [
            d
            for d in detections
            if d["label"] == explained["label"]
            and max(abs(a - b) for a, b in zip(d["box_xyxy"], explained["box_xyxy"])) < 1e-3
        ]
        assert same and abs(same[0]["score"] - explained["score"]) < 1e-5  # a detection /v1/detect reported
        assert len(explained["sampling"]) == attention.n_levels
        total = 0.0
        for level in explained["sampling"]:
            assert len(level["points"]) == len(level["weights"]) == attention.n_heads * attention.n_points
            total += sum(level["weights"])
        assert math.isclose(total, attention.n_heads, rel_tol=1e-5)  # each head's weights sum to 1
    for fields in ({"pixel_x": 5}, {"pixel_x": 500, "pixel_y": 5}, {"pixel_x": -1, "pixel_y": 5}):
        assert_one_line_error(post(server_url, "/v1/explain", data, **fields), 422, "pixel")


def test_model_health_metrics_openapi_and_page(server_url):
    info = httpx.get(server_url + "/v1/model").json()
    assert info["categories"] == CATEGORIES and info["preprocess"] == PREPROCESS.to_dict()
    assert "two-stage" in info["variant"] and info["num_classes"] == 6
    assert info["batch_size"] == 8  # ServeConfig.batch_size, the `serve --batch-size` default
    health = httpx.get(server_url + "/health").json()
    assert health["model_loaded"] is True and health["queue_depth"] == 0
    metrics = httpx.get(server_url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "deformable_detr_batch_size_bucket" in metrics.text
    assert 'deformable_detr_requests_total{endpoint="/health",status="200"}' in metrics.text
    schema = httpx.get(server_url + "/openapi.json").json()
    assert {"/v1/detect", "/v1/explain", "/v1/model", "/health", "/metrics"} <= set(schema["paths"])
    page = httpx.get(server_url + "/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(server_url + asset).status_code == 200
    assert "http" not in httpx.get(server_url + "/static/app.js").text.replace("http-equiv", "")  # offline


def test_no_docs_pages_that_need_a_cdn_and_the_schema_is_served(server_url):
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # FastAPI's pages fetch swagger-ui/redoc from a CDN
        assert httpx.get(server_url + path).status_code == 404, path
    schema = httpx.get(server_url + "/openapi.json")
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "Deformable DETR detection service"


def test_favicon_is_served_for_browsers_opening_other_urls(server_url):
    icon = httpx.get(server_url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg") and icon.content == httpx.get(server_url + "/static/favicon.svg").content
    assert '<link rel="icon" href="/static/favicon.svg"' in httpx.get(server_url + "/").text  # what the page asks for


def test_bad_inputs_get_one_line_answers_and_the_server_keeps_serving(server_url):
    good = encode(scene(64, 48), "PNG")
    assert_one_line_error(post(server_url, "/v1/detect", b""), 400, "empty")
    assert_one_line_error(
        post(server_url, "/v1/detect", b"just some text", "notes.txt", "text/plain"), 415, "notes.txt", "not an image"
    )
    assert_one_line_error(post(server_url, "/v1/detect", good[: len(good) // 2], "cut.png"), 400, "cut.png", "corrupt")
    jpeg = encode(scene(64, 48), "JPEG")
    assert_one_line_error(post(server_url, "/v1/detect", jpeg[:200], "cut.jpg", "image/jpeg"), 400, "cut.jpg")
    assert_one_line_error(
        post(server_url, "/v1/detect", png_claiming(50_000, 50_000), "bomb.png"), 413, "bomb.png", "pixels"
    )
    assert_one_line_error(post(server_url, "/v1/detect", png_claiming(2000, 1000), "big.png"), 413, "max_image_pixels")
    assert_one_line_error(post(server_url, "/v1/detect", b"\0" * (1024 * 1024 + 10)), 413, "upload limit")
    part = b'--x\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
    body = [part] + [b"\0" * 65536] * 20 + [b"\r\n--x--\r\n"]  # 1.3 MB, sent chunked: no Content-Length
    chunked = httpx.post(
        server_url + "/v1/detect",
        content=iter(body),
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=60,
    )
    assert_one_line_error(chunked, 413, "upload limit")
    for fields in (
        {"threshold": 5},
        {"threshold": -0.1},
        {"threshold": "nan"},
        {"threshold": "high"},
        {"top_k": 0},
        {"top_k": 101},
        {"top_k": 2.5},
    ):
        assert_one_line_error(post(server_url, "/v1/detect", good, **fields), 422, next(iter(fields)))
    assert_one_line_error(post(server_url, "/v1/detect", good, threshold="nan"), 422, "finite number")
    assert_one_line_error(post(server_url, "/v1/explain", good, top_k=0), 422, "top_k")
    assert_one_line_error(post(server_url, "/v1/detect", None, threshold=0.5), 422, "image")
    for path in ("/v1/detect", "/v1/explain"):  # a query string would be ignored silently: refused, naming it
        response = post(server_url + "", path + "?threshold=0.14&top_k=3", good)
        assert_one_line_error(response, 422, "query parameters", "threshold, top_k", "form fields")
    assert_one_line_error(
        httpx.post(server_url + "/v1/detect", content=b"{}", headers={"content-type": "application/json"}), 422, "image"
    )
    assert httpx.get(server_url + "/v1/nothing").status_code == 404
    assert post(server_url, "/v1/detect", good).status_code == 200  # still serving
    metrics = httpx.get(server_url + "/metrics").text
    for status in (400, 413, 415, 422):
        assert f'endpoint="/v1/detect",status="{status}"' in metrics


def test_api_key_is_required_on_v1_only(runner):
    with running_server(runner, api_key="s3cret") as (url, _):
        good = encode(scene(64, 48), "PNG")
        assert_one_line_error(post(url, "/v1/detect", good), 401, "API key")
        assert_one_line_error(post(url, "/v1/detect", good, headers={"Authorization": "Bearer wrong"}), 401)
        assert_one_line_error(post(url, "/v1/detect", good, headers={"Authorization": "s3cret"}), 401)
        assert httpx.get(url + "/v1/model", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert post(url, "/v1/detect", good, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(url + "/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(url + "/health").json()["auth_required"] is True


class _FailingRunner:
    """A runner whose model raises, as an out-of-memory or a bug would."""

    def __init__(self, runner):
        self.runner = runner
        self.fail = False

    def info(self):
        return self.runner.info()

    def detect(self, images, **options):
        if self.fail:
            raise RuntimeError("boom: internal detail that must not reach the client")
        return self.runner.detect(images, **options)

    def explain(self, *args):
        return self.runner.explain(*args)


def test_an_internal_error_is_a_500_without_details_and_serving_continues(runner):
    failing = _FailingRunner(runner)
    with running_server(failing) as (url, _):
        good = encode(scene(64, 48), "PNG")
        failing.fail = True
        response = post(url, "/v1/detect", good)
        assert_one_line_error(response, 500, "internal error")
        assert "boom" not in response.text
        failing.fail = False
        assert post(url, "/v1/detect", good).status_code == 200


def test_a_compiled_model_compiles_before_serving_and_answers_as_eager(runner, monkeypatch, one_thread):
    """`serve --compile`: the warm-up compiles the common shape (batch 1 and >= 2) on the model thread before the
    server accepts a connection (torch.compile replaced by the identity; the real compile is test_compiled's)."""
    from serve_helpers import tiny_model

    from deformable_detr.pipeline import compiled
    from deformable_detr.serving.runner import ModelRunner

    monkeypatch.setattr(compiled, "_compile", lambda function, **options: function)
    # 32 px buckets: the 480x640 photo resized to 96x128 fills its bucket, so these two-stage outputs need
    # no padding (tests/models/test_compiled.py checks padded buckets)
    model = compiled.compile_inference(tiny_model(), bucket_px=32)
    with running_server(ModelRunner(model), batch_size=4) as (url, _):
        assert [(r["image_bucket"], r["batch"]) for r in model.compiled_inference.compiles] == [
            ([96, 128], "1"),
            ([96, 128], ">=2"),
        ]
        assert httpx.get(url + "/v1/model").json()["compiled"]["buckets"] == [[96, 128]]
        image = scene(128, 96)
        got = post(url, "/v1/detect", encode(image, "PNG"), threshold=0.0).json()["detections"]
    expected = runner.detect([image], threshold=0.0)[0]  # the eager model, same weights
    assert [d["label"] for d in got] == [d["label"] for d in expected]
    torch.testing.assert_close(
        torch.tensor([d["score"] for d in got]), torch.tensor([d["score"] for d in expected]), rtol=0, atol=1e-5
    )
