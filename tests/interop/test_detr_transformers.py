"""Our DETR baseline against Hugging Face's `DetrForObjectDetection` on identical weights.

The oracle is a tiny randomly initialised HF DETR (native ResNet of basic blocks, base width 8, 2 blocks in
layer2; d_model 32, 4 heads, 2 encoder / 3 decoder layers, 6 queries, K = 3 classes), its weights renamed
into our layout by `hf_detr_state_dict_to_ours` below. Compared on one padded batch: the logits and boxes of
every decoder layer, the Hungarian assignment of every layer, and every loss term of HF's `ImageLoss`
(DETR's criterion, which HF copies from facebookresearch/detr), plus `class_error`, which HF does not log:
it is recomputed here as DETR's `100 - accuracy(logits[matched], labels)` from HF's logits and matching.

Label convention (both): labels 0..K-1, the classifier has K + 1 logits, the last (index K) is "no object",
whose cross-entropy weight is eos_coef = 0.1.

HF's per-layer (auxiliary) outputs are recomputed with `auxiliary_loss=False` from the raw decoder layer
outputs (`decoder_hidden_states`), each put through the decoder's final LayerNorm and the heads, as DETR
does. With `auxiliary_loss=True` HF feeds the *normalised* state of each layer into the next one (and
normalises the last one twice), which DETR does not; that mode is not DETR's and is not compared.
"""

from __future__ import annotations

import re

import pytest
import torch
from hf_reference import _randomize, padded_batch, transformers

from deformable_detr.interop.huggingface_names import backbone_name
from deformable_detr.models.detr import DETR
from deformable_detr.models.detr_config import DetrConfig
from deformable_detr.training.detr_criterion import DetrCriterion, detr_loss_config

loss_for_object_detection = pytest.importorskip("transformers.loss.loss_for_object_detection")

NUM_LABELS = 3
NUM_QUERIES = 6
OUR_CONFIG = DetrConfig(
    backbone="resnet18",
    backbone_depths=(1, 2, 1, 1),
    backbone_base_width=8,
    d_model=32,
    n_heads=4,
    num_encoder_layers=2,
    num_decoder_layers=3,
    dim_feedforward=48,
    dropout=0.0,
    num_queries=NUM_QUERIES,
    num_classes=NUM_LABELS,
)
# Two images (64x80 and 30x38 in one padded batch): 3 and 2 boxes, every label 0..K-1 used, (cx, cy, w, h).
TARGETS = [
    {
        "labels": torch.tensor([2, 0, 1]),
        "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.4, 0.2], [0.5, 0.5, 0.8, 0.9]]),
    },
    {"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.25, 0.7, 0.3, 0.4], [0.6, 0.3, 0.5, 0.5]])},
]

_ENCODER_LAYER = {
    "self_attn_layer_norm": "norm1",
    "final_layer_norm": "norm2",
    "mlp.fc1": "linear1",
    "mlp.fc2": "linear2",
    "self_attn.o_proj": "self_attn.out_proj",
}
_DECODER_LAYER = {
    "self_attn_layer_norm": "norm_self_attn",
    "encoder_attn_layer_norm": "norm_cross_attn",
    "final_layer_norm": "norm_ffn",
    "mlp.fc1": "linear1",
    "mlp.fc2": "linear2",
    "self_attn.o_proj": "self_attn.out_proj",
    "encoder_attn.o_proj": "cross_attn.out_proj",
}
_RENAMED = {
    "model.query_position_embeddings.weight": "query_embed.weight",
    "model.input_projection.weight": "input_proj.weight",
    "model.input_projection.bias": "input_proj.bias",
    "model.decoder.layernorm.weight": "transformer.decoder.norm.weight",
    "model.decoder.layernorm.bias": "transformer.decoder.norm.bias",
}


def hf_detr_state_dict_to_ours(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF `DetrForObjectDetection` (native ResNet backbone) tensors -> our `DETR` names.

    q/k/v projections are concatenated into `nn.MultiheadAttention.in_proj_{weight,bias}` (rows q, k, v).
    """
    ours: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.startswith("model.backbone.model."):
            ours["backbone.body." + backbone_name(key[len("model.backbone.model.") :])] = value
            continue
        match = re.fullmatch(
            r"model\.(encoder|decoder)\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj\.(\w+)", key
        )
        if match:
            part, index, attention, projection, tensor = match.groups()
            attention = "cross_attn" if attention == "encoder_attn" else attention
            qkv.setdefault(f"transformer.{part}.layers.{index}.{attention}.in_proj_{tensor}", {})[projection] = value
            continue
        match = re.fullmatch(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)", key)
        if match:
            part, index, rest = match.groups()
            for hf, our in (_ENCODER_LAYER if part == "encoder" else _DECODER_LAYER).items():
                if rest.startswith(hf + "."):
                    rest = our + rest[len(hf) :]
                    break
            ours[f"transformer.{part}.layers.{index}.{rest}"] = value
            continue
        key = _RENAMED.get(key, key)
        ours[key.replace("class_labels_classifier.", "class_head.").replace("bbox_predictor.", "box_head.")] = value
    for key, parts in qkv.items():
        ours[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # (3C, C) or (3C,)
    return ours


def make_hf_detr(seed: int = 0):
    """A tiny HF DETR in eval mode with every parameter and frozen-BN buffer randomised (see module docstring)."""
    backbone = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 2, 1, 1], layer_type="basic", out_features=["stage4"]
    )
    config = transformers.DetrConfig(
        backbone_config=backbone,
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        num_queries=NUM_QUERIES,
        num_labels=NUM_LABELS,
        dropout=0.0,
        auxiliary_loss=False,
    )
    torch.manual_seed(seed)
    model = transformers.DetrForObjectDetection(config).eval()
    _randomize(model, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        model.class_labels_classifier.bias[-1] -= 2.0  # no-object rarely wins: class_error is neither 0 nor 100
    return model


def hf_detr_outputs(model, images: torch.Tensor, pixel_mask: torch.Tensor) -> dict:
    """HF outputs in our format: "pred_logits", "pred_boxes" of the last layer, "aux_outputs" of the others."""
    with torch.no_grad():
        out = model(pixel_values=images, pixel_mask=pixel_mask, output_hidden_states=True)
        # decoder_hidden_states: the decoder input (zeros), the raw output of each layer but the last, and the
        # final (normalised) output.
        states = out.decoder_hidden_states
        assert not states[0].any()
        hidden = [model.model.decoder.layernorm(state) for state in states[1:-1]] + [states[-1]]
        layers = [
            {"pred_logits": model.class_labels_classifier(h), "pred_boxes": model.bbox_predictor(h).sigmoid()}
            for h in hidden
        ]
    assert len(layers) == model.config.decoder_layers
    torch.testing.assert_close(layers[-1]["pred_logits"], out.logits, rtol=0, atol=0)  # the recomputation is HF's own
    torch.testing.assert_close(layers[-1]["pred_boxes"], out.pred_boxes, rtol=0, atol=0)
    return dict(layers[-1], aux_outputs=layers[:-1])


@pytest.fixture(scope="module")
def models_and_outputs():
    hf_model = make_hf_detr()
    images, pixel_mask = padded_batch()
    ours = DETR.from_state_dict(OUR_CONFIG, hf_detr_state_dict_to_ours(hf_model.state_dict()))
    with torch.no_grad():
        our_out = ours(images, ~pixel_mask.bool())  # HF pixel_mask 1 = valid; ours True = padding
    return hf_model, hf_detr_outputs(hf_model, images, pixel_mask), our_out, (images, pixel_mask)


def _layers(out: dict) -> list[dict]:
    return [*out["aux_outputs"], {"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}]


def test_outputs_of_every_decoder_layer_match_hf(models_and_outputs):
    _, expected, ours, _ = models_and_outputs
    assert ours["pred_logits"].shape == (2, NUM_QUERIES, NUM_LABELS + 1)  # K + 1: no-object last, as HF
    assert len(ours["aux_outputs"]) == len(expected["aux_outputs"]) == 2
    for index, (mine, theirs) in enumerate(zip(_layers(ours), _layers(expected))):
        for name in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=1e-5, msg=f"layer {index} {name}")


def _hf_criterion():
    matcher = loss_for_object_detection.HungarianMatcher(
        class_cost=1, bbox_cost=5, giou_cost=2
    )  # HF DetrConfig defaults
    return loss_for_object_detection.ImageLoss(matcher, NUM_LABELS, eos_coef=0.1, losses=["labels", "boxes"])


def _hf_format(layer: dict) -> dict:
    return {"logits": layer["pred_logits"], "pred_boxes": layer["pred_boxes"]}


def test_matching_of_every_layer_matches_hf(models_and_outputs):
    _, expected, ours, _ = models_and_outputs
    hf_targets = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in TARGETS]
    criterion = DetrCriterion.from_config(NUM_LABELS, detr_loss_config())
    for mine, theirs in zip(_layers(ours), _layers(expected)):
        our_indices = criterion.matcher(mine, TARGETS)
        hf_indices = _hf_criterion().matcher(_hf_format(theirs), hf_targets)
        for (query, target), (hf_query, hf_target) in zip(our_indices, hf_indices):
            assert query.tolist() == hf_query.tolist() and target.tolist() == hf_target.tolist()


def test_every_loss_term_and_class_error_match_hf(models_and_outputs):
    hf_model, expected, ours, (images, pixel_mask) = models_and_outputs
    hf_targets = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in TARGETS]
    hf_criterion = _hf_criterion()
    hf_losses = hf_criterion(
        {**_hf_format(expected), "auxiliary_outputs": [_hf_format(a) for a in expected["aux_outputs"]]}, hf_targets
    )
    criterion = DetrCriterion.from_config(NUM_LABELS, detr_loss_config())
    losses = criterion(ours, TARGETS)
    names = [f"{base}{suffix}" for suffix in ("", "_0", "_1") for base in ("loss_ce", "loss_bbox", "loss_giou")]
    assert set(hf_losses) == set(names)
    for name in names:
        torch.testing.assert_close(losses[name], hf_losses[name], rtol=0, atol=1e-5, msg=name)

    # class_error: DETR's 100 - top-1 accuracy (over all K + 1 logits) of the matched queries, from HF's side.
    indices = hf_criterion.matcher(_hf_format(expected), hf_targets)
    batch_idx, query_idx = hf_criterion._get_source_permutation_idx(indices)
    labels = torch.cat([t["class_labels"][j] for t, (_, j) in zip(hf_targets, indices)])
    correct = (expected["pred_logits"][batch_idx, query_idx].argmax(-1) == labels).float().mean()
    assert 0 < correct < 1  # some matched queries right, some wrong
    torch.testing.assert_close(losses["class_error"], 100.0 - 100.0 * correct, rtol=0, atol=1e-4)
    correct_objects = (expected["pred_logits"][batch_idx, query_idx, :-1].argmax(-1) == labels).float().mean()
    torch.testing.assert_close(losses["class_error_objects"], 100.0 - 100.0 * correct_objects, rtol=0, atol=1e-4)

    # HF's own total for the last layer (its loss_function, with DetrConfig's weights 1 / 5 / 2) = our weighted sum.
    with torch.no_grad():
        hf_total = hf_model(pixel_values=images, pixel_mask=pixel_mask, labels=hf_targets).loss
    ours_last = {name: losses[name] for name in ("loss_ce", "loss_bbox", "loss_giou")}
    torch.testing.assert_close(criterion.weighted_sum(ours_last), hf_total, rtol=0, atol=5e-5)
