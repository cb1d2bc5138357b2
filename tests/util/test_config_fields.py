"""Every field of every config refuses a value of the wrong type with one line naming the field.

Property-based: for each field of each config class, hypothesis draws values of kinds the field's annotation
does not admit (the table `_wrong` below is the oracle: written here from the annotation rules in
`util/config_fields.py`'s docstring, not from its code) and checks the ConfigError, built in Python
(`dataclasses.replace`) and read from JSON (`TrainConfig.from_dict`, as `train --config` reads it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deformable_detr.errors import ConfigError
from deformable_detr.experiments.convergence import ConvergenceConfig
from deformable_detr.models.config import ModelConfig
from deformable_detr.models.detr_config import DetrConfig
from deformable_detr.pipeline.processor import PreprocessConfig
from deformable_detr.serving.config import ServeConfig
from deformable_detr.training.config import TrainConfig
from deformable_detr.training.criterion import LossConfig
from deformable_detr.training.optim import OptimConfig
from deformable_detr.util.config_fields import check_fields

BASES = {
    TrainConfig: TrainConfig(),
    ModelConfig: ModelConfig(),
    DetrConfig: DetrConfig(),
    OptimConfig: OptimConfig(),
    LossConfig: LossConfig(),
    PreprocessConfig: PreprocessConfig(),
    ServeConfig: ServeConfig(checkpoint="model.pth"),
    ConvergenceConfig: ConvergenceConfig(out_dir="out"),
}
FIELDS = [(cls, name, hint) for cls in BASES for name, hint in typing.get_type_hints(cls).items()]

_KINDS = {
    "int": st.integers(-(10**12), 10**12),
    "fraction": st.integers(-(10**6), 10**6).map(lambda i: i + 0.25),
    "whole float": st.integers(-1000, 1000).map(float),  # 8.0 is not an integer
    "non-finite": st.sampled_from([math.nan, math.inf, -math.inf]),
    "bool": st.booleans(),
    "str": st.text(max_size=6),
    "none": st.none(),
    "dict": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    "list of str": st.lists(st.text(max_size=3), min_size=1, max_size=3),
}
_ACCEPTS = {  # kinds a plain annotation admits
    int: {"int"},
    float: {"int", "fraction", "whole float"},
    bool: {"bool"},
    str: {"str"},
}


def _accepted(hint) -> set[str]:
    """The kinds of `_KINDS` that `hint` admits (lists are judged by `_wrong` itself)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_accepted(arg) for arg in args))
    if hint is type(None):
        return {"none"}
    if origin is tuple:
        return {"list of str"} if args[0] is str else set()
    return _ACCEPTS.get(hint, set())  # a dataclass admits none of the kinds, not even a dict


def _wrong(hint, exclude: tuple[str, ...] = ()) -> st.SearchStrategy:
    """Values `hint` does not admit (none of the kinds in `exclude`)."""
    strategies = [s for kind, s in _KINDS.items() if kind not in _accepted(hint) and kind not in exclude]
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for member in members:
        if typing.get_origin(member) is tuple:
            item_hints = typing.get_args(member)
            # a list with one item of a wrong kind (first, middle or alone)
            strategies.append(st.builds(lambda bad: [bad], _wrong(item_hints[0], exclude)))
            if item_hints[-1] is not Ellipsis:  # fixed length: one item too many or too few
                good = {int: 1, float: 0.5, str: "a"}[item_hints[0]]
                strategies.append(st.sampled_from([[good] * (len(item_hints) + 1), [good] * (len(item_hints) - 1)]))
    return st.one_of(strategies)


_JSON_NESTED = {
    TrainConfig: [],
    OptimConfig: ["optim"],
    LossConfig: ["loss"],
    ModelConfig: ["model"],
    DetrConfig: ["model"],
}


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_a_value_of_the_wrong_type_is_one_line_naming_the_field(data):
    for cls, name, hint in FIELDS:  # every field of every config, each example
        value = data.draw(_wrong(hint), label=f"{cls.__name__}.{name}")
        with pytest.raises(ConfigError) as error:
            dataclasses.replace(BASES[cls], **{name: value})
        message = str(error.value)
        assert message.startswith(f"{cls.__name__}.{name} = ") and ": takes " in message and "\n" not in message


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_a_config_file_with_a_wrong_type_is_one_line_naming_the_field(data):
    for cls, name, hint in FIELDS:
        if cls not in _JSON_NESTED or (cls is DetrConfig and name == "architecture"):  # that key picks the class
            continue
        value = data.draw(_wrong(hint, exclude=("dict",)), label=f"{cls.__name__}.{name}")  # a dict: a sub-config
        values = {"architecture": "detr", name: value} if cls is DetrConfig else {name: value}
        for key in reversed(_JSON_NESTED[cls]):
            values = {key: values}
        with pytest.raises(ConfigError) as error:
            TrainConfig.from_dict(json.loads(json.dumps(values)))  # what `train --config` reads
        message = str(error.value)
        assert message.startswith(f"{cls.__name__}.{name} = ") and ": takes " in message and "\n" not in message


@pytest.mark.parametrize(
    "values, message",
    [  # the three, then what the message names
        ({"batch_size": "8"}, r"^TrainConfig.batch_size = '8' \(str\): takes an integer$"),
        ({"crop_resize": None}, r"^TrainConfig.crop_resize = None \(null\): takes a list of integers$"),
        ({"model": None}, r"^TrainConfig.model = None \(null\): takes an object of ModelConfig fields or .*DetrConfig"),
        ({"optim": {"betas": [0.9]}}, r"^OptimConfig.betas = \[0.9\] \(list\): takes a list of 2 finite numbers$"),
        ({"model": {"backbone_depths": [1, 1, True, 1]}}, r"^ModelConfig.backbone_depths = .*: takes a list of 4"),
        ({"amp": 1}, r"^TrainConfig.amp = 1 \(int\): takes true or false$"),
        ({"epochs": 3.0}, r"^TrainConfig.epochs = 3.0 \(float\): takes an integer$"),
        ({"val_size": "800"}, r"^TrainConfig.val_size = '800' \(str\): takes an integer or None$"),
        ({"loss": [1]}, r"^TrainConfig.loss = \[1\] \(list\): takes an object of LossConfig fields$"),
        ([1, 2], r"^TrainConfig: got \[1, 2\] \(list\); takes an object of its fields$"),
    ],
)
def test_messages_name_the_field_the_value_and_what_it_takes(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


def test_right_values_are_normalised():
    config = TrainConfig.from_dict({"crop_size": [300, 400], "optim": {"betas": [0.8, 0.9]}, "model": {"dropout": 0}})
    assert config.crop_size == (300, 400) and config.optim.betas == (0.8, 0.9) and config.model.dropout == 0
    np = pytest.importorskip("numpy")
    assert type(TrainConfig(batch_size=np.int64(3)).batch_size) is int  # JSON-writable again
    assert TrainConfig(data_dir=__import__("pathlib").Path("d")).data_dir == "d"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"train_scales": [480, 0]}, r"TrainConfig.train_scales = \[480, 0\]; .* each >= 1"),
        ({"crop_resize": []}, r"TrainConfig.crop_resize = \[\]; give at least one"),
        ({"crop_size": [600, 384]}, r"TrainConfig.crop_size = \[600, 384\]; need \[min, max\] with 1 <= min <= max"),
        ({"max_size": 0}, r"TrainConfig.max_size = 0 must be >= 1"),
        ({"val_size": 0}, r"TrainConfig.val_size = 0 must be >= 1"),
        ({"max_train_images": 0}, r"TrainConfig.max_train_images = 0 must be >= 1"),
        ({"seed": -1}, r"TrainConfig.seed = -1 must be in \[0, 2\*\*32\)"),
        ({"output_dir": " "}, r"TrainConfig.output_dir is empty"),
    ],
)
def test_ranges_of_train_config_fields(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


@dataclasses.dataclass(frozen=True)
class _Choices:
    mode: Literal["fast", "exact"] = "fast"
    sizes: tuple[int, ...] | None = None

    def __post_init__(self):
        check_fields(self)


def test_literal_choices_and_optional_tuples():
    assert _Choices("exact", [1, 2]).sizes == (1, 2)
    with pytest.raises(ConfigError, match=r"^_Choices.mode = 'slow' \(str\): takes one of 'fast', 'exact'$"):
        _Choices("slow")
    with pytest.raises(ConfigError, match=r"^_Choices.sizes = \[1, 'a'\] \(list\): takes a list of integers or None$"):
        _Choices(sizes=[1, "a"])


def test_cli_train_config_file_with_a_wrong_type_is_one_error_line(tmp_path, capsys):
    from deformable_detr.cli import main

    for values, field in (
        ({"batch_size": "8"}, "TrainConfig.batch_size"),
        ({"crop_resize": None}, "TrainConfig.crop_resize"),
        ({"model": None}, "TrainConfig.model"),
        ({"optim": {"lr": "fast"}}, "OptimConfig.lr"),
        ({"model": {"num_classes": 2.5}}, "ModelConfig.num_classes"),
    ):
        (tmp_path / "bad.json").write_text(json.dumps(values))
        status = main(["train", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith(f"error: {field} = ") and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists()
