"""`--init` from a Hugging Face `DeformableDetrForObjectDetection` folder onto a dataset with other classes.

Oracle: the model `deformable_detr.load` reads from the folder (its outputs match HF's, see
test_huggingface.py): every non-head tensor equal, heads of the new shape, a name-matched row copied.
"""

import pytest
import torch
from hf_reference import make_hf_model

import deformable_detr
from deformable_detr.models.detector import DeformableDETR
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.warm_start import init_model_config, prepare_model


@pytest.mark.slow
def test_init_from_transformers_folder(tmp_path):
    hf = make_hf_model("box-refine")
    names = [f"thing{i}" for i in range(hf.config.num_labels)]
    hf.config.id2label = dict(enumerate(names))
    hf.config.label2id = {n: i for i, n in enumerate(names)}
    hf.save_pretrained(tmp_path / "hf")
    reference = deformable_detr.load(tmp_path / "hf")
    assert [c["name"] for c in reference.categories] == names  # id2label became the category names
    target = [{"id": 1, "name": "new"}, {"id": 2, "name": names[3]}]
    config = init_model_config(TrainConfig(init=str(tmp_path / "hf")), num_classes=len(target))
    model = DeformableDETR(config.model)
    prepare_model(model, config, target)
    for key, value in model.state_dict().items():
        expected = reference.state_dict()[key]
        if key.startswith("class_heads."):
            assert value.shape[0] == 2
            torch.testing.assert_close(value[1], expected[3], rtol=0, atol=0)  # names[3] <- names[3]
        else:
            torch.testing.assert_close(value, expected, rtol=0, atol=0)
