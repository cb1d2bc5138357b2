"""`predict`: detect objects in image files and draw them."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="detect objects in image files with a trained checkpoint",
                                   description="Writes OUT/detections.json and OUT/<image>.png with the boxes drawn.")
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by train (OUT/checkpoint.pth or best.pth)")
    parser.add_argument("images", type=Path, nargs="+", help="image files")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default predictions)")
    parser.add_argument("--threshold", type=float, default=0.3, help="minimum score kept (default 0.3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.set_defaults(handler=_predict)


def _predict(args) -> None:
    from ..training.checkpoint import load_trained_model
    from ..training.predict import predict_images

    model, config, categories = load_trained_model(args.checkpoint, args.device)
    records, drawn = predict_images(model, config, categories, args.images, args.threshold, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detections.json").write_text(json.dumps(records, indent=2) + "\n")
    for record, image in zip(records, drawn):
        image.save(args.out / (Path(record["file"]).stem + ".png"))
        print(f"{record['file']}: {len(record['detections'])} detections")
    print(f"wrote {args.out / 'detections.json'} and {len(drawn)} drawn image(s) in {args.out}")
