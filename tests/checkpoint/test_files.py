"""The one atomic-write family: whole file or the old one, no leftovers, the previous copy kept; the checksum."""

import os

import pytest
import torch

from deformable_detr.checkpoint.files import (
    atomic_save,
    atomic_write_text,
    checksum,
    link_atomic,
    remove_temp_files,
    verify_checksum,
    write_atomic,
)
from deformable_detr.checkpoint.safe_load import load_torch_file
from deformable_detr.errors import CheckpointError


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "best.pth"
    atomic_save({"w": torch.zeros(1)}, path)

    def broken(temporary):
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken)
    assert torch.equal(load_torch_file(path)["w"], torch.zeros(1))
    assert [p.name for p in tmp_path.iterdir()] == ["best.pth"]


def test_mode_follows_umask_previous_copy_and_created_folder(tmp_path):
    umask = os.umask(0o027)
    try:
        path = tmp_path / "new" / "notes.txt"
        atomic_write_text(path, "first")
        write_atomic(path, lambda temporary: temporary.write_text("second"), keep_previous=tmp_path / "new" / "old.txt")
    finally:
        os.umask(umask)
    assert path.read_text() == "second" and (tmp_path / "new" / "old.txt").read_text() == "first"
    assert path.stat().st_mode & 0o777 == 0o640  # 0666 & ~0o027, like any other file the user writes
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["notes.txt", "old.txt"]


def test_link_atomic_replaces_the_target(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("old b")
    link_atomic(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "a" and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_remove_temp_files_only_of_the_given_names(tmp_path):
    for name in ("checkpoint.pth.1a2b3c4d.tmp", "other.json.00ff00ff.tmp", "users_own.tmp", "checkpoint.pth"):
        (tmp_path / name).write_bytes(b"")
    removed = remove_temp_files(tmp_path, ["checkpoint.pth", "best.pth"])
    assert [p.name for p in removed] == ["checkpoint.pth.1a2b3c4d.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth", "other.json.00ff00ff.tmp", "users_own.tmp"]


def test_checksum_sees_values_dtypes_and_order_free_keys():
    state = {"b": torch.arange(4.0), "a": [1, "x"]}
    assert checksum(state) == checksum({"a": [1, "x"], "b": torch.arange(4.0)})  # key order does not matter
    assert checksum(state) != checksum({"b": torch.arange(4.0).double(), "a": [1, "x"]})
    changed = {"b": torch.tensor([0.0, 1.0, 2.0, 3.5]), "a": [1, "x"]}
    assert checksum(state) != checksum(changed)
    assert verify_checksum({**state, "checksum": checksum(state)}, "f.pth").keys() == state.keys()
    with pytest.raises(CheckpointError, match=r"^f.pth: checksum mismatch, the file is corrupt"):
        verify_checksum({**changed, "checksum": checksum(state)}, "f.pth")
