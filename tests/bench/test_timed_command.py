"""A command past its time limit is killed with its whole process group (children included)."""

import sys
import time
from pathlib import Path

from deformable_detr.bench.timed_command import run_command


def test_a_command_past_its_time_limit_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; child = subprocess.Popen(['sleep', '60']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('started', flush=True); time.sleep(60)"
    )
    started = time.monotonic()
    status, timed_out = run_command([sys.executable, "-c", script], tmp_path / "step.log", timeout=3)
    assert timed_out and status == -9 and time.monotonic() - started < 30
    log = (tmp_path / "step.log").read_text()
    assert "started" in log and "killed after 3 s (time limit)" in log
    child = Path(f"/proc/{pid_file.read_text()}/status")
    for _ in range(50):  # the orphaned `sleep` is reaped by init shortly after the kill
        if not child.exists() or "State:\tZ" in child.read_text():
            break
        time.sleep(0.1)
    assert not child.exists() or "State:\tZ" in child.read_text()
