"""Variant specs of the convergence experiment: labels, DETR's loss and lr, overrides, errors."""

import pytest

from deformable_detr.errors import ConfigError
from deformable_detr.experiments.variants import VARIANTS, variant_train_config
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detr_config import DetrConfig
from deformable_detr.training.config import TrainConfig


def test_every_variant_shares_backbone_width_and_depth():
    configs = [factory() for factory in VARIANTS.values()]
    for field in (
        "backbone",
        "backbone_depths",
        "backbone_base_width",
        "d_model",
        "num_encoder_layers",
        "num_decoder_layers",
        "num_queries",
    ):
        assert len({getattr(c, field) for c in configs}) == 1, field


def test_detr_gets_its_loss_and_half_the_lr():
    base = TrainConfig.preset("demo")
    label, config = variant_train_config("detr", base)
    assert label == "detr" and isinstance(config.model, DetrConfig)
    assert (config.loss.cost_class, config.loss.loss_ce) == (1.0, 1.0)
    assert config.optim.lr == base.optim.lr / 2 and config.optim.lr_backbone == base.optim.lr_backbone / 2
    label, config = variant_train_config("deformable-refine", base)
    assert isinstance(config.model, ModelConfig) and config.model.with_box_refine and not config.model.two_stage
    assert config.optim.lr == base.optim.lr and config.loss.loss_ce == 2.0


def test_labels_and_overrides():
    base = TrainConfig.preset("demo")
    label, config = variant_train_config("q20=deformable:num_queries=20:optim.lr=0.5:loss.loss_giou=3", base)
    assert label == "q20"
    assert (config.model.num_queries, config.optim.lr, config.loss.loss_giou) == (20, 0.5, 3)
    label, config = variant_train_config("detr:dilation=true", base)
    assert label == "detr+dilation=true" and config.model.dilation is True
    label, config = variant_train_config("long=detr:train.epochs=120:train.eval_every=10", base)
    assert (config.epochs, config.eval_every, config.seed) == (120, 10, base.seed)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("yolo", "'yolo' .* is unknown; choose one of detr"),
        ("detr:warp=3", "unexpected keyword argument 'warp'"),
        ("detr:num_queries", "is not FIELD=VALUE"),
        ("detr:sched.x=1", "is not FIELD=VALUE"),
        ("a/b=detr", "cannot name a folder"),
        ("detr:train.seed=3", "are the experiment's, not a model's"),
        ("detr:train.backbone_weights=x.pth", "are the experiment's, not a model's"),
        ("detr:train.epochz=3", "unexpected keyword argument 'epochz'"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        variant_train_config(spec, TrainConfig.preset("demo"))
