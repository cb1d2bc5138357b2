"""The `Detector` contract: both detectors implement it, and the code that runs a detector reads nothing else.

The second test reads the source (AST) of the pipeline and of the commands built on it: every attribute read
on the detector (`model.X`, `self.model.X`, `getattr(model, "X")`) must be a member of the Protocol (or one the
pipeline sets itself, `PIPELINE_ATTRIBUTES`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from torch import nn

from deformable_detr.models.detector import DeformableDETR
from deformable_detr.models.detr import DETR
from deformable_detr.pipeline.contract import PIPELINE_ATTRIBUTES, Detector
from tiny_models import tiny_config, tiny_detr_config

SRC = Path(__file__).resolve().parents[2] / "src" / "deformable_detr"
# Modules that run a detector they are given, and the name they give it.
USERS = {
    "pipeline/run.py": "model",
    "pipeline/compiled.py": "model",
    "serving/runner.py": "model",
    "evaluation/evaluate.py": "model",
    "inference/predict_files.py": "model",
}
MEMBERS = {name for name in vars(Detector) if not name.startswith("_")} | set(Detector.__annotations__)


def test_both_detectors_implement_the_contract():
    assert isinstance(DeformableDETR(tiny_config()), Detector)
    assert isinstance(DETR(tiny_detr_config()), Detector)
    assert not isinstance(nn.Linear(2, 2), Detector)  # an nn.Module alone is not a detector


def _detector_reads(tree: ast.AST, name: str) -> set[str]:
    """Attributes read on `name` or `self.name`, including `getattr(name, "X", ...)`."""

    def is_detector(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id == name
        return isinstance(node, ast.Attribute) and node.attr == name and isinstance(node.value, ast.Name)

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_detector(node.value):
            found.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and is_detector(node.args[0])
            and isinstance(node.args[1], ast.Constant)
        ):
            found.add(node.args[1].value)
    return found


@pytest.mark.parametrize("module", sorted(USERS))
def test_code_that_runs_a_detector_uses_only_the_contract(module):
    reads = _detector_reads(ast.parse((SRC / module).read_text()), USERS[module])
    assert reads, f"{module}: no read of `{USERS[module]}` found; the test no longer looks at the right name"
    assert reads <= MEMBERS | PIPELINE_ATTRIBUTES, f"{module} reads {sorted(reads - MEMBERS - PIPELINE_ATTRIBUTES)}"


def test_the_reader_finds_attribute_reads():
    tree = ast.parse("def f(model):\n    model.a(); self.model.b; getattr(model, 'c', None); other.d\n")
    assert _detector_reads(tree, "model") == {"a", "b", "c"}
