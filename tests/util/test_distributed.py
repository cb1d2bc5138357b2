"""util/distributed.py: single-process fallbacks, and DDP on CPU (gloo) via torchrun, whose gradients equal
single-process batch-2 gradients. `ddp_worker` is imported by name (pytest puts this folder on sys.path)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deformable_detr.util import distributed

HERE = Path(__file__).parent


def test_single_process_fallbacks(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.is_initialized() and not distributed.launched_by_torchrun()
    assert (distributed.world_size(), distributed.rank(), distributed.is_main_process()) == (1, 0, True)
    assert distributed.init_from_environment("cpu") == torch.device("cpu") and not distributed.is_initialized()
    values = {"loss": 1.5, "loss_ce": 0.25}
    assert distributed.all_reduce_mean(values) == values and distributed.all_reduce_mean({}) == {}
    tensor = torch.tensor([1.0, 2.0])
    assert torch.equal(distributed.all_reduce_sum(tensor), tensor)
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    distributed.barrier()
    distributed.destroy()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    import ddp_worker

    out = tmp_path / "grads.pth"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29517",
            str(HERE / "ddp_worker.py"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp_grads = torch.load(out, weights_only=True)

    from deformable_detr.models.config import ModelConfig
    from deformable_detr.models.detector import DeformableDETR

    torch.manual_seed(0)
    model = DeformableDETR(ModelConfig.preset("tiny", **ddp_worker.MODEL))
    images, targets = ddp_worker.batch()
    single = ddp_worker.gradients(model, images, targets)
    assert set(single) == set(ddp_grads)
    for name, grad in single.items():
        torch.testing.assert_close(ddp_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
