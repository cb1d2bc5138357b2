"""load_torch_file: tensors and Namespace load; code-running, corrupt, truncated and foreign files are refused."""

import argparse
import io
import os
import pickle
import random
import re

import pytest
import torch

from deformable_detr.checkpoint.safe_load import load_torch_file
from deformable_detr.errors import CheckpointError


class _WritesMarker:
    """Unpickling this runs `open(marker, "w")`: the shape of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def make_malicious_checkpoint(path, marker):
    """A torch.save file whose unpickling would create `marker`."""
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _WritesMarker(marker)}, path)


def _no_bad_advice(message: str) -> None:
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "\x1b" not in message and "\n" not in message


def test_loads_tensors_and_official_namespace(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"model": {"w": torch.arange(3.0)}, "args": argparse.Namespace(nheads=8), "epoch": 3}, path)
    state = load_torch_file(path)
    assert torch.equal(state["model"]["w"], torch.arange(3.0))
    assert state["args"].nheads == 8 and state["epoch"] == 3


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    make_malicious_checkpoint(path, marker)
    with pytest.raises(CheckpointError, match=r"evil.pth: refused: .*\(io.open\) that would run code") as error:
        load_torch_file(path)
    _no_bad_advice(str(error.value))
    assert not marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _WritesMarker(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="evil.pkl: refused") as error:
        load_torch_file(path)
    _no_bad_advice(str(error.value))
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["random", "truncated", "truncated-legacy", "empty", "text"])
def test_broken_files_give_one_line(tmp_path, kind):
    good = io.BytesIO()
    torch.save({"w": torch.zeros(64)}, good)
    legacy = io.BytesIO()
    torch.save({"w": torch.zeros(64)}, legacy, _use_new_zipfile_serialization=False)
    data = {
        "random": random.Random(0).randbytes(5000),
        "truncated": good.getvalue()[: len(good.getvalue()) // 2],
        "truncated-legacy": legacy.getvalue()[: len(legacy.getvalue()) // 2],
        "empty": b"",
        "text": b"not a checkpoint at all\n",
    }[kind]
    path = tmp_path / "broken.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="broken.pth: ") as error:
        load_torch_file(path)
    _no_bad_advice(str(error.value))


def test_many_random_and_cut_files_raise_only_checkpoint_error(tmp_path):
    rng = random.Random(1)
    legacy = io.BytesIO()
    torch.save({"w": torch.zeros(8), "n": 3}, legacy, _use_new_zipfile_serialization=False)
    blob = legacy.getvalue()
    path = tmp_path / "fuzz.pth"
    for index in range(60):
        if index % 3 == 0:
            data = rng.randbytes(rng.randint(1, 2000))
        elif index % 3 == 1:
            data = blob[: rng.randint(1, len(blob) - 1)]
        else:
            mutated = bytearray(blob)
            for _ in range(4):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        path.write_bytes(data)
        try:
            load_torch_file(path)
        except CheckpointError as error:
            _no_bad_advice(str(error))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: no such file"):
        load_torch_file(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_torch_file(tmp_path)


def test_checkpoint_error_is_still_a_value_error(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(os.urandom(16))
    with pytest.raises(ValueError):
        load_torch_file(path)


@pytest.mark.parametrize("cut", [0.5, 0.99, 0.01])
def test_truncated_checkpoint_is_one_plain_line_without_torch_internals(tmp_path, cut):
    good = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(256)}}, good)
    path = tmp_path / "model.pth"
    path.write_bytes(good.getvalue()[: max(1, int(len(good.getvalue()) * cut))])
    with pytest.raises(CheckpointError) as error:
        load_torch_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}: the file is truncated") and "re-download or re-save it" in message
    assert not re.search(r"PytorchStreamReader|miniz|central directory|RuntimeError", message), message
    _no_bad_advice(message)


def test_a_file_that_is_not_a_checkpoint_says_so_without_torch_internals(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello world " * 20)
    with pytest.raises(
        CheckpointError, match=r"notes.pth: not a PyTorch checkpoint \(not a file torch.save wrote"
    ) as e:
        load_torch_file(path)
    assert "KeyError" not in str(e.value)
