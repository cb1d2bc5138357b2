"""DINO/H-DETR training options on the model: config checks, inference unchanged, hybrid branch only in
training, mixed query selection's learned content, one-to-many targets in the criterion."""

import dataclasses

import pytest
import torch

from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detector import DeformableDETR


def test_query_selection_must_agree_with_two_stage(make_config):
    assert make_config().query_selection_mode == "static"
    assert make_config(two_stage=True).query_selection_mode == "pure"
    assert make_config(two_stage=True, query_selection="mixed").query_selection_mode == "mixed"
    with pytest.raises(ValueError, match="query_selection='mixed' selects encoder proposals; set two_stage=True"):
        make_config(query_selection="mixed")
    with pytest.raises(ValueError, match="query_selection='static' uses learned queries; set two_stage=False"):
        make_config(two_stage=True, query_selection="static")
    with pytest.raises(ValueError, match="query_selection='best' is unknown; choose one of static, pure, mixed"):
        make_config(query_selection="best")
    with pytest.raises(ValueError, match="num_queries_one2many=-1 must be >= 0"):
        make_config(num_queries_one2many=-1)


def test_options_round_trip_and_presets():
    config = ModelConfig.preset("demo-dino-style")
    assert config.denoising and config.look_forward_twice and config.query_selection == "mixed"
    assert config.num_queries_one2many > 0 and config.two_stage and config.with_box_refine
    assert ModelConfig.from_dict(config.to_dict()) == config
    paper = ModelConfig.preset("deformable-detr-dino-style")
    base = ModelConfig.preset("deformable-detr-two-stage")
    assert (
        dataclasses.replace(
            paper, query_selection=None, denoising=False, look_forward_twice=False, num_queries_one2many=0
        )
        == base
    )
    # configs written before these fields existed load with every option off
    old = {
        k: v
        for k, v in ModelConfig().to_dict().items()
        if k not in ("query_selection", "denoising", "look_forward_twice", "num_queries_one2many")
    }
    assert ModelConfig.from_dict(old) == ModelConfig()


@pytest.mark.parametrize("two_stage", [False, True])
def test_options_leave_inference_and_base_weights_unchanged(make_config, two_stage):
    """Add-on modules are built after the base ones: the same seed gives the same base weights, and in
    eval() the model with denoising, look-forward-twice and hybrid matching equals the plain one bit for bit."""
    plain_config = make_config(two_stage=two_stage, with_box_refine=True)
    options = dict(look_forward_twice=True, num_queries_one2many=12, denoising=two_stage)
    torch.manual_seed(0)
    plain = DeformableDETR(plain_config).eval()
    torch.manual_seed(0)
    with_options = DeformableDETR(dataclasses.replace(plain_config, **options)).eval()
    shared = plain.state_dict()
    for name, tensor in with_options.state_dict().items():
        if name in shared:
            assert torch.equal(tensor, shared[name]), name
    extra = sorted(set(with_options.state_dict()) - set(shared))
    assert extra == sorted(
        (["label_embed.weight"] if two_stage else []) + ([] if two_stage else ["query_embed_one2many.weight"])
    )
    images = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        a, b = plain(images), with_options(images)
    assert sorted(a) == sorted(b)  # no one2many_outputs / dn_outputs in eval()
    torch.testing.assert_close(b["pred_logits"], a["pred_logits"], rtol=0, atol=0)
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], rtol=0, atol=0)


@pytest.mark.parametrize("two_stage", [False, True])
def test_hybrid_branch_only_in_training(make_config, two_stage):
    config = make_config(
        two_stage=two_stage,
        with_box_refine=True,
        num_queries_one2many=12,
        query_selection="mixed" if two_stage else None,
    )
    model = DeformableDETR(config).train()
    images = torch.randn(2, 3, 64, 80)
    out = model(images)
    assert out["pred_boxes"].shape == (2, config.num_queries, 4)
    assert out["one2many_outputs"]["pred_boxes"].shape == (2, 12, 4)
    assert len(out["one2many_outputs"]["aux_outputs"]) == config.num_decoder_layers - 1
    model.eval()
    with torch.no_grad():
        assert "one2many_outputs" not in model(images)


def test_hybrid_queries_do_not_change_the_one_to_one_outputs(make_config):
    """The one-to-one and one-to-many queries are masked from each other: with dropout 0 the one-to-one
    outputs in training equal the eval() outputs (which have no hybrid queries)."""
    torch.manual_seed(0)
    model = DeformableDETR(make_config(two_stage=True, with_box_refine=True, num_queries_one2many=12))
    images = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        training = model.train()(images)
        inference = model.eval()(images)
    torch.testing.assert_close(training["pred_boxes"], inference["pred_boxes"], rtol=1e-5, atol=1e-6)


def test_mixed_selection_uses_learned_content_and_proposal_positions(make_config):
    torch.manual_seed(0)
    model = DeformableDETR(make_config(two_stage=True, query_selection="mixed")).eval()
    seen = {}
    model.transformer.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(target=args[0], **kwargs), with_kwargs=True
    )
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 80))
    content = model.content_embed.weight  # (Lq, C)
    torch.testing.assert_close(seen["target"], content[None].expand(2, -1, -1), rtol=0, atol=0)
    assert not torch.allclose(seen["query_pos"][0], seen["query_pos"][1])  # positions follow each image's proposals
    assert seen["reference_points"].shape == (2, model.config.num_queries, 4)


def test_one_to_many_targets_are_the_ground_truth_k_times():
    from deformable_detr.training.criterion import SetCriterion
    from deformable_detr.training.matcher import HungarianMatcher

    seen = []

    class Recording(HungarianMatcher):
        def forward(self, outputs, targets):
            seen.append(targets)
            return [(torch.arange(len(t["labels"])), torch.arange(len(t["labels"]))) for t in targets]

    criterion = SetCriterion(
        3, Recording(), {"loss_ce": 2, "loss_bbox": 5, "loss_giou": 2}, hybrid_k=3, hybrid_weight=0.5
    )
    targets = [{"labels": torch.tensor([2, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]])}]
    one2many_boxes = torch.cat([targets[0]["boxes"]] * 3 + [torch.full((1, 4), 0.5)])[None]  # (1, 7, 4)
    one2many_boxes[0, 0, 3] = 0.4  # one of the six matched predictions is off by 0.2 in height
    outputs = {
        "pred_logits": torch.zeros(1, 4, 3),
        "pred_boxes": torch.full((1, 4, 4), 0.5),
        "one2many_outputs": {"pred_logits": torch.zeros(1, 7, 3), "pred_boxes": one2many_boxes, "aux_outputs": []},
    }
    losses = criterion(outputs, targets)
    repeated = seen[-1][0]
    assert repeated["labels"].tolist() == [2, 1] * 3
    torch.testing.assert_close(repeated["boxes"], targets[0]["boxes"].repeat(3, 1))
    assert float(losses["loss_bbox_o2m"]) == pytest.approx(0.2 / (2 * 3), rel=1e-5)  # normalised by k x boxes
    assert criterion.weight_of("loss_bbox_o2m") == 2.5 and criterion.weight_of("loss_ce_o2m_0") == 1.0


@pytest.mark.slow
def test_exported_onnx_has_no_training_branches(make_config, tmp_path):
    """A model left in train() mode with every option on exports only its `num_queries` matching queries."""
    onnx = pytest.importorskip("onnx")
    from deformable_detr.interop.onnx import export_onnx

    config = make_config(
        two_stage=True,
        with_box_refine=True,
        query_selection="mixed",
        denoising=True,
        look_forward_twice=True,
        num_queries_one2many=12,
    )
    model = DeformableDETR(config).train()
    export_onnx(model, tmp_path / "model.onnx", batch_size=1, height=64, width=80)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert len(shapes) == 2
    assert sorted(shapes.values()) == sorted([[1, config.num_queries, config.num_classes], [1, config.num_queries, 4]])
