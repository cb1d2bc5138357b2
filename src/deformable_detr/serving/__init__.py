"""`deformable-detr serve`: the detector behind an HTTP API with dynamic batching, and a web page.

    from deformable_detr.serving import ServeConfig, create_app
    app = create_app(ServeConfig(checkpoint="run/best.pth", batch_size=8))   # an ASGI app for uvicorn

`config.py` (settings), `runner.py` (the model side, and `BatchedRunner`: the model behind the batcher),
`batching.py` (gathering requests into batches on one model thread), `routes.py` (endpoints, request fields,
error answers), `upload.py` (body limit, image decoding), `metrics.py` (Prometheus text), `app.py`
(`create_app`: puts them together), `static/` (the page at `/`).
"""

from deformable_detr.serving.app import create_app
from deformable_detr.serving.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
