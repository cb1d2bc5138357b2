"""A command with a time limit, in its own process group, its output appended to a log; on timeout (or when
the calling script is stopped) the whole group is killed, DataLoader workers and compilers included.
`make gpu-check` runs each of its steps' commands this way."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()


def command_env(**extra: str) -> dict[str, str]:
    """This process's environment with src/ on PYTHONPATH, unbuffered output, Hugging Face offline, and `extra`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in ("src", env.get("PYTHONPATH", "")) if p)
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


def run_command(argv: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> tuple[int, bool]:
    """Run `argv` in its own process group with stdout+stderr appended to `log`; on timeout kill the whole group.

    Returns:
        (exit status, timed out). A command that cannot start gives status 127.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"$ {' '.join(argv)}\n".encode())
        sink.flush()
        try:
            process = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT, env=env or command_env(), start_new_session=True
            )
        except OSError as error:
            sink.write(f"could not start: {error}\n".encode())
            return 127, False
        with _running_lock:
            _running.add(process)
        try:
            return process.wait(timeout=max(timeout, 1)), False
        except subprocess.TimeoutExpired:
            _kill(process)
            sink.write(f"\n[gpu-check] killed after {timeout:.0f} s (time limit)\n".encode())
            return -9, True
        finally:
            with _running_lock:
                _running.discard(process)


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL the process group this run started for `process` (DataLoader workers and compilers included)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def kill_all() -> None:
    """Kill the process group of every command still running (the caller is being stopped)."""
    with _running_lock:
        processes = list(_running)
    for process in processes:
        _kill(process)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of the log at `path` (of its last 20 kB); "" when there is none."""
    if not path.is_file():
        return ""
    text = path.read_bytes()[-20_000:].decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
