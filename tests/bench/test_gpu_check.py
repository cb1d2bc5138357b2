"""`make gpu-check` (bench/gpu_check.py, bench/gpu_report.py): steps that fail or run out of time do not stop
the others, junit files are summarised, and what the budget left out is
reported with the command that runs it. The GPU run itself happens on a GPU machine; `--smoke` is its dry run."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest

from deformable_detr.bench import gpu_check, gpu_check_steps, gpu_report

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.a" name="test_ok"/>
<testcase classname="tests.a" name="test_broken"><failure message="AssertionError: 1 != 2&#10;more">trace</failure></testcase>
<testcase classname="tests.b" name="test_collect"><error message="collection failure">trace</error></testcase>
<testcase classname="tests.b" name="test_gpu"><skipped message="needs a CUDA device (gpu marker)"/></testcase>
<testcase classname="tests.b" name="test_gpu2"><skipped message="needs a CUDA device (gpu marker)"/></testcase>
</testsuite></testsuites>
"""


def test_junit_summary_counts_failures_and_skip_reasons(tmp_path):
    (tmp_path / "a.xml").write_text(JUNIT)
    (tmp_path / "broken.xml").write_text("<testsuites><testsuite")  # a file cut by a kill is ignored
    summary = gpu_report.junit_summary([tmp_path / "a.xml", tmp_path / "broken.xml", tmp_path / "missing.xml"])
    assert (summary["passed"], summary["failed"], summary["skipped"]) == (1, 2, 2)
    assert summary["failures"] == [
        {"test": "tests.a::test_broken", "kind": "failure", "message": "AssertionError: 1 != 2"},
        {"test": "tests.b::test_collect", "kind": "error", "message": "collection failure"},
    ]
    assert summary["skip_reasons"] == {"needs a CUDA device (gpu marker)": 2}


def test_failing_and_over_budget_steps_do_not_stop_the_others(tmp_path, monkeypatch):
    def broken(check, result, limit):
        raise RuntimeError("bench crashed")

    def fine(check, result, limit):
        result.status = "ok"
        return {"packages": {"triton": "3.6.0"}, "gpu": "NVIDIA H200", "torch": "2.11.0"}

    monkeypatch.setitem(gpu_check_steps.STEP_FUNCTIONS, "model", (broken, 10, 0))
    monkeypatch.setitem(gpu_check_steps.STEP_FUNCTIONS, "env", (fine, 10, 0))
    monkeypatch.setitem(gpu_check_steps.STEP_FUNCTIONS, "demo", (fine, 10, 10_000))  # needs more than the budget
    check = gpu_check_steps.Check(
        smoke=False, out=tmp_path / "out", results=tmp_path / "results", work=tmp_path / "work",
        deadline=time.monotonic() + 60,
    )  # fmt: skip
    check.logs.mkdir(parents=True)
    assert gpu_check.run(check, ["model", "env", "demo"], budget=60) == 1

    summary = json.loads((tmp_path / "out" / "gpu_check_summary.json").read_text())
    statuses = {step["name"]: (step["status"], step["note"]) for step in summary["steps"]}
    assert statuses["model"] == ("failed", "gpu-check itself: RuntimeError: bench crashed")
    assert statuses["env"][0] == "ok" and statuses["demo"][0] == "not run"
    assert summary["data"]["env"]["gpu"] == "NVIDIA H200"
    with tarfile.open(tmp_path / "out" / "gpu_check_files.tar.gz") as archive:
        assert archive.getnames() is not None
    assert (tmp_path / "out" / "gpu_check.log").is_file()

    report = gpu_report.format_report(
        summary["header"], [gpu_report.StepResult(**step) for step in summary["steps"]], summary["data"], 12.0, 60
    )
    assert report.splitlines()[-1] == "not run (budget): make gpu-check GPU_CHECK_ARGS='--steps demo'"
    assert "NVIDIA H200, torch 2.11.0, triton 3.6.0" in report


@pytest.mark.slow
def test_smoke_run_of_two_steps(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the repository root, where `make gpu-check` runs
    args = ["--smoke", "--steps", "env", "tests", "--test-files", "tests/util/test_box_ops.py", "--out", str(tmp_path)]
    assert gpu_check.main(args) == 0
    summary = json.loads((tmp_path / "gpu_check_summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [("env", "ok"), ("tests", "ok")]
    assert summary["data"]["tests"]["passed"] > 0 and summary["data"]["tests"]["failed"] == 0
    assert capsys.readouterr().out.splitlines()[-2].startswith("tests ")  # the table is printed last
