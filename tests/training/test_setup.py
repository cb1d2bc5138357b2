"""setup.build_criterion: the one place that picks the loss for a model; the loop trains what it picks."""

import dataclasses

import pytest
import torch

from deformable_detr.training.criterion import SetCriterion
from deformable_detr.training.detr_criterion import DetrCriterion, detr_loss_config
from deformable_detr.training.engine import fit
from deformable_detr.training.setup import build_criterion
from tiny_models import tiny_detr_config

TARGETS = [{"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]])}]


@pytest.mark.parametrize("model", ["detr", "deformable", "deformable-denoising"])
def test_build_criterion_fits_the_model(tiny_train_config, make_tiny_model_config, model):
    """DETR gets DETR's softmax loss and no denoising queries; Deformable DETR the focal loss, with denoising
    queries exactly when the model is built with `denoising`."""
    model_config = {
        "detr": tiny_detr_config(num_classes=3),
        "deformable": make_tiny_model_config(num_classes=3),
        "deformable-denoising": make_tiny_model_config(num_classes=3, denoising=True),
    }[model]
    loss = detr_loss_config() if model == "detr" else tiny_train_config.loss
    criterion = build_criterion(dataclasses.replace(tiny_train_config, model=model_config, loss=loss))
    assert type(criterion) is (DetrCriterion if model == "detr" else SetCriterion)
    assert criterion.num_classes == 3
    queries = criterion.denoising_queries(TARGETS)
    assert (queries is not None) == (model == "deformable-denoising")
    if queries is not None:  # about LossConfig.dn_number = 100 queries: 25 groups of 2 positives + 2 negatives
        assert queries.num_groups == 25 and queries.labels.shape == (1, 100)


def test_fit_trains_a_denoising_model_on_its_denoising_terms(tiny_train_config, make_tiny_model_config):
    config = dataclasses.replace(tiny_train_config, model=make_tiny_model_config(denoising=True), epochs=1, max_steps=1)
    record = fit(config, progress=False).history[-1]
    assert record["train_loss_ce_dn"] > 0 and record["train_loss_bbox_dn_0"] > 0
