"""Training the runs of an experiment: one at a time, or N at once in worker processes that die with the experiment."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from ..errors import ConfigError
from ..training.config import TrainConfig

DONE_NAME = "done.json"


def run_one(train_config: TrainConfig, progress: bool) -> None:
    """Train one run to completion, resuming from its checkpoint if it has one; marks it done."""
    from ..training.engine import fit

    run_dir = Path(train_config.output_dir)
    if (run_dir / "checkpoint.pth").is_file():
        check_same_settings(train_config)
        fit(train_config, resume=True, progress=progress)
    else:  # a fresh run; a folder left by a run that stopped before its first checkpoint is started over
        fit(train_config, progress=progress, overwrite=True)
    (run_dir / DONE_NAME).write_text(json.dumps({"done": True}) + "\n")


def check_same_settings(train_config: TrainConfig) -> None:
    """Raise a one-line ConfigError if the run in `train_config.output_dir` (started or finished) was trained with
    other settings than `train_config`: a rerun into an existing --out reuses its runs only when they match."""
    saved_config = Path(train_config.output_dir) / "config.json"
    if not saved_config.is_file():
        return
    saved = json.loads(saved_config.read_text())
    wanted = json.loads(json.dumps(train_config.to_dict()))
    saved["model"]["num_classes"] = wanted["model"]["num_classes"]  # training sets it from the data
    if saved != wanted:
        changed = sorted(k for k in wanted if saved.get(k) != wanted.get(k))
        raise ConfigError(
            f"{saved_config}: this run was trained with other settings ({', '.join(changed)}); "
            "re-run the experiment with its original arguments, or choose another --out"
        )


def train_all(jobs: list[TrainConfig], processes: int, progress: bool) -> None:
    """Train `jobs`, one at a time or `processes` at once (each in a fresh process, longest budgets first)."""
    with tqdm(total=len(jobs), desc="experiment", unit="run", disable=not progress) as bar:
        if processes == 1:
            for job in jobs:
                bar.set_postfix_str(Path(job.output_dir).parent.name + " " + Path(job.output_dir).name)
                run_one(job, progress)
                bar.update(1)
            return
        import multiprocessing
        from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

        order = sorted(jobs, key=lambda job: -job.epochs)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, context, initializer=_exit_with, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(run_one, job, False) for job in order]
            for future in futures:
                future.add_done_callback(lambda _: bar.update(1))
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in futures:
                        other.cancel()
                    raise future.exception()


def _exit_with(parent: int) -> None:
    """In a worker: exit as soon as the experiment's process `parent` is gone (killed), instead of training on."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
