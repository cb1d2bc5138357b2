"""Fine-tuning through `fit`: --init from a training checkpoint onto a YOLO dataset with other classes,
EMA evaluated and saved as best.pth, keep-N, patience, bad data refused or skipped, frozen-backbone refusal.

Oracles: the source checkpoint's tensors, the EMA state stored beside the raw weights, file listings.
"""

import dataclasses
import json

import pytest
import torch

from deformable_detr.errors import ConfigError, DatasetError
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.checkpoint import load_checkpoint
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.engine import fit
from deformable_detr.training.retention import evaluations_since_best, keep_epoch_checkpoint, should_stop_early
from deformable_detr.training.warm_start import prepare_model


def _yolo_from_coco(coco_root, out, names):
    """Write the COCO synthetic splits as a YOLO dataset whose class k is `names[k]` (category id k + 1)."""
    for split in ("train", "val"):
        data = json.loads((coco_root / split / "annotations.json").read_text())
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        sizes = {im["id"]: im for im in data["images"]}
        for image in data["images"]:
            (out / "images" / split / image["file_name"]).write_bytes(
                (coco_root / split / "images" / image["file_name"]).read_bytes()
            )
            lines = []
            for ann in data["annotations"]:
                if ann["image_id"] == image["id"] and ann["category_id"] <= len(names):
                    x, y, w, h = ann["bbox"]
                    W, H = sizes[ann["image_id"]]["width"], sizes[ann["image_id"]]["height"]
                    lines.append(f"{ann['category_id'] - 1} {(x + w / 2) / W} {(y + h / 2) / H} {w / W} {h / H}")
            (out / "labels" / split / (image["file_name"].rsplit(".", 1)[0] + ".txt")).write_text(
                "\n".join(lines) + "\n"
            )
    (out / "classes.txt").write_text("\n".join(names) + "\n")
    return out


def test_keep_n_deletes_only_old_epoch_checkpoints(tmp_path):
    (tmp_path / "best.pth").write_bytes(b"best")
    for epoch in range(1, 6):
        (tmp_path / "checkpoint.pth.tmp").write_bytes(f"epoch {epoch}".encode())
        (tmp_path / "checkpoint.pth.tmp").replace(tmp_path / "checkpoint.pth")  # as the atomic writer does
        deleted = keep_epoch_checkpoint(tmp_path, epoch, keep=2)
        assert [p.name for p in deleted] == ([f"checkpoint_epoch{epoch - 2}.pth"] if epoch > 2 else [])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pth",
        "checkpoint.pth",
        "checkpoint_epoch4.pth",
        "checkpoint_epoch5.pth",
    ]
    assert (tmp_path / "checkpoint_epoch4.pth").read_bytes() == b"epoch 4"  # each keeps its own epoch's content
    assert (tmp_path / "checkpoint.pth").read_bytes() == b"epoch 5" and (tmp_path / "best.pth").read_bytes() == b"best"
    assert keep_epoch_checkpoint(tmp_path, 6, keep=0) == [] and not (tmp_path / "checkpoint_epoch6.pth").exists()


def test_patience_counts_evaluations_without_a_better_ap():
    history = [{"AP": 0.1}, {"epoch": 1}, {"AP": 0.3}, {"AP": 0.2}, {"AP": 0.3}]
    assert evaluations_since_best(history) == 2
    assert should_stop_early(history, 2) and not should_stop_early(history, 3) and not should_stop_early(history, 0)


def test_frozen_backbone_without_weights_refuses_to_start(tiny_train_config):
    frozen = dataclasses.replace(
        tiny_train_config, model=dataclasses.replace(tiny_train_config.model, backbone_frozen_bn=True)
    )
    categories = [{"id": 1, "name": "a"}]
    with pytest.raises(ConfigError, match="--backbone-weights FILE.*--random-backbone"):
        prepare_model(DeformableDETR(frozen.model), frozen, categories)
    assert (
        prepare_model(DeformableDETR(frozen.model), dataclasses.replace(frozen, random_backbone=True), categories) == []
    )
    with pytest.raises(ConfigError, match="stay random"):
        prepare_model(
            DeformableDETR(tiny_train_config.model),
            dataclasses.replace(tiny_train_config, freeze="backbone"),
            categories,
        )


@pytest.mark.slow
def test_init_from_checkpoint_onto_yolo_data_with_ema_keep_and_patience(tiny_train_config, tiny_dataset, tmp_path):
    source_config = dataclasses.replace(tiny_train_config, epochs=1, output_dir=str(tmp_path / "source"))
    fit(source_config, progress=False)
    source = load_checkpoint(tmp_path / "source" / "checkpoint.pth")
    source_names = [c["name"] for c in source["categories"]]
    names = [source_names[1], "blob", source_names[0]]  # two known names, out of order, and a new one
    yolo = _yolo_from_coco(tiny_dataset, tmp_path / "yolo", names)

    config = dataclasses.replace(
        tiny_train_config,
        data_dir=str(yolo),
        output_dir=str(tmp_path / "ft"),
        init=str(tmp_path / "source" / "checkpoint.pth"),
        ema_decay=0.5,
        keep=1,
        eval_every=1,
        epochs=2,
        patience=5,
    )
    model = DeformableDETR(dataclasses.replace(source_config.model, num_classes=3))
    lines = prepare_model(model, config, [{"id": i + 1, "name": n} for i, n in enumerate(names)])
    assert "2 matched by name" in lines[0] and "1 new (blob)" in lines[0]
    for key, value in model.state_dict().items():
        if not key.startswith("class_heads."):
            torch.testing.assert_close(value, source["model"][key], rtol=0, atol=0)
        else:
            torch.testing.assert_close(value[0], source["model"][key][1], rtol=0, atol=0)
            torch.testing.assert_close(value[2], source["model"][key][0], rtol=0, atol=0)

    result = fit(config, progress=False)
    assert result.steps == 4 and (tmp_path / "ft" / "train_batch0.png").is_file()
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert saved["model"]["num_classes"] == 3 and saved["init"].endswith("checkpoint.pth")
    files = sorted(p.name for p in (tmp_path / "ft").iterdir() if p.name.startswith("checkpoint_epoch"))
    assert files == ["checkpoint_epoch2.pth"]
    last = load_checkpoint(tmp_path / "ft" / "checkpoint.pth")
    ema_weights = last["callbacks"]["ema"]["module"]
    assert last["callbacks"]["ema"]["updates"] == 4
    assert not torch.equal(ema_weights["class_heads.0.weight"], last["model"]["class_heads.0.weight"])
    best = load_checkpoint(tmp_path / "ft" / "best.pth")
    best_is_last = best["step"] == 4
    if best_is_last:  # best.pth holds the EMA weights that were evaluated
        torch.testing.assert_close(
            best["model"]["class_heads.0.weight"], ema_weights["class_heads.0.weight"], rtol=0, atol=0
        )


@pytest.mark.slow
def test_bad_label_line_refuses_training_unless_skip_bad(tiny_train_config, tiny_dataset, tmp_path):
    yolo = _yolo_from_coco(tiny_dataset, tmp_path / "yolo", ["circle", "square", "triangle", "star", "ring", "cross"])
    label = sorted((yolo / "labels" / "train").iterdir())[0]
    label.write_text(label.read_text() + "0 0.5 0.5 0.2\n")
    line = len(label.read_text().splitlines())
    config = dataclasses.replace(tiny_train_config, data_dir=str(yolo), epochs=1, batch_size=1)
    with pytest.raises(DatasetError, match=rf"labels/train/{label.name}:{line}: 4 numbers.*--skip-bad") as error:
        fit(config, progress=False)
    assert "\n" not in str(error.value)
    result = fit(dataclasses.replace(config, skip_bad=True), progress=False)
    assert result.steps == 3  # 4 images, the bad one skipped, batch 1


def test_zero_ap_hint_only_when_ap_is_zero_and_loss_flat():
    from deformable_detr.training.diagnose import should_warn

    assert should_warn(0.0, 10.0, 9.5) and not should_warn(0.0, 10.0, 8.0) and not should_warn(0.2, 10.0, 10.0)
    assert not should_warn(0.0, None, 10.0) and not should_warn(-1.0, 10.0, 10.0)  # -1: AP undefined (no boxes)


def test_train_batch0_shows_boxes_where_the_targets_are(tmp_path):
    import numpy as np
    from PIL import Image

    from deformable_detr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from deformable_detr.viz.training_batch import draw_training_batch

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    images = (torch.full((2, 3, 64, 80), 0.5) - mean) / std  # grey, normalised
    padding_mask = torch.zeros(2, 64, 80, dtype=torch.bool)
    padding_mask[1, :, 40:] = True  # second image is 40 px wide
    targets = [
        {"boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]]), "labels": torch.tensor([0])},
        {"boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]]), "labels": torch.tensor([1])},
    ]
    path = draw_training_batch(images, padding_mask, targets, ["a", "b"], tmp_path / "batch.png")
    grid = np.asarray(Image.open(path))
    assert grid.shape[1] == 2 * grid.shape[1] // 2
    tile = grid[:, : grid.shape[1] // 2]
    scale = tile.shape[1] / 80  # tiles enlarged by a whole factor
    grey = tile[int(32 * scale), int(5 * scale)]
    assert abs(int(grey[0]) - 128) <= 2  # de-normalised back to the grey that went in
    edge = tile[int(40 * scale), int(20 * scale)]  # left edge of the box (x0 = 20 px) in class 0's colour
    assert tuple(edge) != tuple(grey)


def test_init_reads_its_source_once(tiny_train_config, tmp_path, caplog):
    from deformable_detr.training.setup import setup

    DeformableDETR(tiny_train_config.model).save_pretrained(tmp_path / "source")
    config = dataclasses.replace(tiny_train_config, init=str(tmp_path / "source"), output_dir=str(tmp_path / "ft"))
    with caplog.at_level("INFO"):
        setup(config, progress=False)
    loaded = [r.getMessage() for r in caplog.records if "loaded as" in r.getMessage()]
    assert len(loaded) == 1 and str(tmp_path / "source") in loaded[0]
    assert sum("init from" in r.getMessage() for r in caplog.records) == 1


def test_finetune_preset_keeps_the_measured_levers():
    # docs/results/faster-training/report.md: class loss 4 paid on every seed when fine-tuning; EMA kept (free).
    config = TrainConfig.preset("finetune")
    assert (config.loss.loss_ce, config.loss.cost_class, config.ema_decay) == (4.0, 2.0, 0.999)
