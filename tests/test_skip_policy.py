"""The skip policy of tests/conftest.py: only `gpu` tests may skip (without CUDA); any other skip fails the run
unless DDETR_ALLOW_SKIPS=1; a test failing only on a module that is not installed is reported as a skip.

Runs pytest in a subprocess on a folder holding a copy of tests/conftest.py and a few sample tests.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

SAMPLES = """
import pytest

def test_passes():
    pass

def test_skips_for_a_missing_tool():
    pytest.skip("no frobnicator here")

def test_imports_a_module_that_is_not_installed():
    import deformable_detr_no_such_module  # noqa: F401

@pytest.mark.gpu
def test_on_the_gpu():
    import torch
    assert torch.cuda.is_available()

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False
"""


def _run(folder: Path, allow: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DDETR_ALLOW_SKIPS"}
    if allow:
        env["DDETR_ALLOW_SKIPS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_skip_other_than_gpu_fails_the_run_unless_allowed(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    shutil.copy(Path(__file__).with_name("tiny_models.py"), tmp_path / "tiny_models.py")  # conftest's fixtures use it
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\nmarkers =\n    gpu: needs CUDA\n")
    (tmp_path / "test_samples.py").write_text(SAMPLES)

    strict = _run(tmp_path, allow=False)
    assert strict.returncode == 1, strict.stdout
    counts = "2 passed, 2 skipped" if torch.cuda.is_available() else "1 passed, 3 skipped"  # the gpu test runs or skips
    assert f"{counts}, 1 xfailed" in strict.stdout
    listed = strict.stdout.split("only `gpu` tests may skip", 1)[1]
    assert "test_samples.py::test_skips_for_a_missing_tool: Skipped: no frobnicator here" in listed
    assert (
        "test_imports_a_module_that_is_not_installed: Skipped: needs deformable_detr_no_such_module, "
        "which is not installed here" in listed
    )
    assert "test_on_the_gpu" not in listed and "test_expected_failure" not in listed
    assert "set DDETR_ALLOW_SKIPS=1" in listed

    allowed = _run(tmp_path, allow=True)
    assert allowed.returncode == 0, allowed.stdout
    assert "allowed by DDETR_ALLOW_SKIPS" in allowed.stdout and "no frobnicator here" in allowed.stdout
    assert f"{counts}, 1 xfailed" in allowed.stdout
