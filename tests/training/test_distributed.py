"""DDP on CPU (gloo) via torchrun: gradients equal single-process batch-2 gradients."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path, one_thread):
    sys.path.insert(0, str(HERE))
    try:
        import ddp_worker
    finally:
        sys.path.remove(str(HERE))
    out = tmp_path / "grads.pth"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
         str(HERE / "ddp_worker.py"), str(out)],
        capture_output=True, text=True, timeout=240, env=env,
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
