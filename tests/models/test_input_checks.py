"""Bad input to DeformableDETR.forward: one ModelInputError naming the problem, before any layer runs."""

import pytest
import torch

from deformable_detr.errors import ModelInputError
from deformable_detr.models.detector import DeformableDETR


def _model(make_config):
    return DeformableDETR(make_config()).eval()


def _mask(batch=1, height=32, width=32):
    return torch.zeros(batch, height, width, dtype=torch.bool)


@pytest.mark.parametrize(
    "images, mask, message",
    [
        (torch.rand(3, 32, 32), None, r"\(B, 3, H, W\).*images\[None\]"),
        (torch.rand(1, 1, 32, 32), None, "1 channels.*RGB"),
        (torch.rand(1, 4, 32, 32), None, "4 channels"),
        (torch.rand(0, 3, 32, 32), None, "empty batch"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), None, "dtype torch.uint8.*float"),
        (
            torch.rand(1, 3, 32, 32).index_put_(
                (torch.tensor(0), torch.tensor(1), torch.tensor(2), torch.tensor(3)), torch.tensor(float("nan"))
            ),
            None,
            "NaN or Inf",
        ),
        (torch.full((1, 3, 32, 32), float("inf")), None, "NaN or Inf"),
        (torch.rand(1, 3, 32, 32), _mask(1, 32, 31), r"shape \(1, 32, 31\).*\(1, 32, 32\)"),
        (torch.rand(2, 3, 32, 32), _mask(1), r"shape \(1, 32, 32\)"),
        (torch.rand(1, 3, 32, 32), _mask().float(), "dtype torch.float32.*bool"),
        (torch.rand(1, 3, 32, 32), _mask().to(torch.uint8), "dtype torch.uint8.*bool"),
        ("not a tensor", None, "got str"),
    ],
)
def test_bad_input_raises_one_clear_error(make_config, images, mask, message):
    model = _model(make_config)
    with pytest.raises(ModelInputError, match=message):
        model(images, mask)


def test_model_input_error_is_a_value_error_and_good_input_still_runs(make_config):
    model = _model(make_config)
    with pytest.raises(ValueError):
        model(torch.rand(1, 2, 32, 32))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 80), _mask(1, 64, 80))
    assert out["pred_boxes"].shape[0] == 1
