"""Training actually learns: the loss falls on a fixed batch, and one image can be overfit until its boxes are found."""

import json
import math

import pytest
import torch

from deformable_detr.data.coco import CocoDetection, collate
from deformable_detr.data.transforms import make_transforms
from deformable_detr.evaluation.evaluate import evaluate
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.detr import DETR
from deformable_detr.training.criterion import LossConfig, SetCriterion
from deformable_detr.training.detr_criterion import DetrCriterion, detr_loss_config
from deformable_detr.training.optim import OptimConfig, build_optimizer
from tiny_models import tiny_detr_config


def _one_image(tiny_dataset, tmp_path, size=64):
    """The first training image as a one-image dataset (and its ground truth file)."""
    coco = json.loads((tiny_dataset / "train" / "annotations.json").read_text())
    image = coco["images"][0]
    coco["images"] = [image]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(coco))
    dataset = CocoDetection(
        tiny_dataset / "train" / "images", path, make_transforms(False, (size,), 2 * size, val_size=size)
    )
    return dataset, path


def _train(model, dataset, steps, lr=2e-3, criterion=None):
    criterion = criterion or SetCriterion.from_config(dataset.num_classes, LossConfig())
    optimizer = build_optimizer(model, OptimConfig(lr=lr, lr_backbone=lr))
    images, padding_mask, targets = collate([dataset[0]])
    losses = []
    model.train()
    for _ in range(steps):
        loss = criterion.weighted_sum(criterion(model(images, padding_mask), targets))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_loss_decreases_on_fixed_batch(tiny_dataset, tmp_path, make_tiny_model_config, one_thread):
    torch.manual_seed(0)
    dataset, _ = _one_image(tiny_dataset, tmp_path)
    model = DeformableDETR(make_tiny_model_config(num_classes=dataset.num_classes))
    losses = _train(model, dataset, 8)
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.slow
def test_overfit_one_image_finds_its_boxes(tiny_dataset, tmp_path, make_tiny_model_config, one_thread):
    torch.manual_seed(0)
    dataset, gt_path = _one_image(tiny_dataset, tmp_path)
    model = DeformableDETR(make_tiny_model_config(num_classes=dataset.num_classes, num_queries=10))
    _train(model, dataset, 150, lr=3e-3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=collate)
    metrics = evaluate(model, loader, str(gt_path), dataset.label_to_category_id)
    assert metrics["AP50"] == pytest.approx(1.0)


@pytest.mark.slow
def test_detr_overfits_one_image(tiny_dataset, tmp_path, one_thread):
    """The DETR baseline (softmax + no-object class, DETR's matcher and loss weights) learns one image too."""
    torch.manual_seed(0)
    dataset, gt_path = _one_image(tiny_dataset, tmp_path)
    config = tiny_detr_config(num_classes=dataset.num_classes)
    criterion = DetrCriterion.from_config(dataset.num_classes, detr_loss_config())
    model = DETR(config)
    _train(model, dataset, 300, lr=1e-3, criterion=criterion)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=collate)
    metrics = evaluate(model, loader, str(gt_path), dataset.label_to_category_id)
    assert metrics["AP50"] == pytest.approx(1.0)


@pytest.mark.slow
def test_overfit_one_image_with_every_training_option(tiny_dataset, tmp_path, make_tiny_model_config, one_thread):
    """Denoising, mixed query selection, look-forward-twice and hybrid matching all on: the image is still learned."""
    torch.manual_seed(0)
    dataset, gt_path = _one_image(tiny_dataset, tmp_path)
    config = make_tiny_model_config(
        num_classes=dataset.num_classes,
        num_queries=10,
        two_stage=True,
        query_selection="mixed",
        denoising=True,
        look_forward_twice=True,
        num_queries_one2many=20,
    )
    model = DeformableDETR(config)
    criterion = SetCriterion.from_config(dataset.num_classes, LossConfig(dn_number=20))
    optimizer = build_optimizer(model, OptimConfig(lr=3e-3, lr_backbone=3e-3))
    images, padding_mask, targets = collate([dataset[0]])
    model.train()
    for _ in range(150):
        outputs = model(images, padding_mask, denoising=criterion.denoising_queries(targets))
        assert "dn_outputs" in outputs and "one2many_outputs" in outputs
        criterion.weighted_sum(criterion(outputs, targets)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad()
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=collate)
    metrics = evaluate(model, loader, str(gt_path), dataset.label_to_category_id)
    assert metrics["AP50"] == pytest.approx(1.0)


@pytest.mark.slow
def test_detr_class_error_falls_to_zero_on_a_few_easy_images(tmp_path, one_thread):
    """DETR on 8 easy images (1-2 shapes of 24-53 px in 96 px images, 3 classes, `make_dataset`'s easy-set options):
    the class error of its matched queries (argmax over K + 1 logits, no-object included, as DETR logs it) starts
    near chance and falls to 0, and the cross-entropy falls far below the best image-blind prediction's."""
    from deformable_detr.data.synthetic import make_dataset

    paths = make_dataset(
        tmp_path,
        8,
        0,
        96,
        seed=0,
        num_workers=1,
        classes="circle,square,triangle",
        objects_per_image=(1, 2),
        object_size=(24, 53),
    )
    dataset = CocoDetection(
        paths["train"].images_dir, paths["train"].annotations_file, make_transforms(False, (96,), 192, val_size=96)
    )
    images, padding_mask, targets = collate([dataset[i] for i in range(8)], size_divisibility=32)
    torch.manual_seed(0)
    model = DETR(tiny_detr_config(num_classes=3)).train()
    criterion = DetrCriterion.from_config(3, detr_loss_config())
    optimizer = build_optimizer(model, OptimConfig(lr=2e-3, lr_backbone=2e-3))
    class_errors, losses_ce = [], []
    for _ in range(60):
        losses = criterion(model(images, padding_mask), targets)
        criterion.weighted_sum(losses).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad()
        class_errors.append(losses["class_error"].item())
        losses_ce.append(losses["loss_ce"].item())
    # Best image-blind prediction: no-object at its weighted share a, each class (1 - a) / K; its weighted CE is the
    # entropy-like bound below (N matched boxes of weight 1, Q*B - N unmatched of weight eos_coef 0.1).
    matched = sum(len(t["labels"]) for t in targets)
    unmatched = 8 * model.config.num_queries - matched
    a = 0.1 * unmatched / (0.1 * unmatched + matched)
    blind = (0.1 * unmatched * -math.log(a) + matched * -math.log((1 - a) / 3)) / (0.1 * unmatched + matched)
    assert sum(class_errors[:3]) / 3 >= 30
    assert max(class_errors[-10:]) == 0.0
    assert losses_ce[-1] < 0.2 * blind
