"""The one device check: one message per problem, whoever asks (CLI, load, fit, benchmarks)."""

import pytest
import torch

from deformable_detr.errors import ConfigError
from deformable_detr.util.devices import checked_device


def test_cpu_passes_and_bad_names_are_one_line():
    assert checked_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^device 'gpu0' is not a device; use cpu, cuda or cuda:N$"):
        checked_device("gpu0")
    with pytest.raises(ConfigError, match=r"^device 'meta': only cpu and cuda are supported$"):
        checked_device("meta")


def test_missing_cuda_and_index_past_the_last(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^device 'cuda:0': this machine has no CUDA device \(torch .*\); use cpu$"):
        checked_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert checked_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"^device 'cuda:2': only cuda:0..cuda:1 exist on this machine$"):
        checked_device("cuda:2")
