"""`serve` of a DETR run folder (loaded at startup, as `deformable-detr serve --checkpoint RUN`): /v1/model
describes it, /v1/detect answers the saved model's detections, /v1/explain refuses in one line (400).

Oracle: the DETR that was saved, in memory (its `predict`).
"""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deformable_detr.serving import ServeConfig, create_app
from tiny_models import SHAPES, write_detr_run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder, saved = write_detr_run(tmp_path_factory.mktemp("detr") / "run")
    with TestClient(create_app(ServeConfig(checkpoint=str(folder)))) as client:
        yield client, saved


def _png(width: int = 80, height: int = 60) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((width, height)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def test_model_info(served):
    client, _ = served
    response = client.get("/v1/model")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["variant"] == "DETR, resnet18, single-scale global attention"
    assert info["config"]["architecture"] == "detr" and info["attention_backend"] is None
    assert [c["name"] for c in info["categories"]] == SHAPES
    assert info["source"]["format"] == "training-checkpoint"


def test_detect_answers_the_saved_models_detections(served):
    client, saved = served
    data = _png()
    response = client.post("/v1/detect", files={"image": ("a.png", data, "image/png")}, data={"threshold": "0.1"})
    assert response.status_code == 200, response.text
    got = response.json()["detections"]
    expected = saved.predict(Image.open(io.BytesIO(data)), threshold=0.1)[0].to_dict()["detections"]
    assert len(got) == len(expected) > 0
    for item, reference in zip(got, expected):
        assert (item["label"], item["name"]) == (reference["label"], reference["name"])
        assert item["score"] == pytest.approx(reference["score"], abs=1e-5)
        assert item["box_xyxy"] == pytest.approx(reference["box_xyxy"], abs=1e-3)


def test_explain_refuses_in_one_line(served):
    client, _ = served
    response = client.post("/v1/explain", files={"image": ("a.png", _png(), "image/png")})
    assert response.status_code == 400
    assert response.json() == {
        "detail": "explain: DETR has no sampling points (no deformable attention: DETR, resnet18, single-scale "
        "global attention); explain needs a Deformable DETR model"
    }
