"""The convergence experiment's numbers across seeds: final AP per seed, epochs to reach DETR's AP, the epoch ratio.

`summary.json` (written by `experiment convergence`) holds, besides extra detail keys:

    {"models": {NAME: {"seeds": [...], "final_ap": [per seed], "final_aps": [per seed], "epochs": int,
                       "epochs_to_detr_ap": [per seed, null where never reached]}},
     "detr_plateaued": bool, "ratio": {NAME: float or null}}

The reference is the first DETR model (else the first model); its target is the mean over seeds of its final AP.
A model's ratio is the reference's epochs divided by the model's mean epochs to reach that target (null unless every
seed reached it), as the paper compares DETR's 500-epoch schedule with Deformable DETR's epochs.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

PLATEAU_TOLERANCE = 0.10  # relative change of the mean AP over the last quarter of the epochs
BOOTSTRAP_SAMPLES = 2000


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation); sd is 0.0 for one value, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_curve(runs: list, key: str = "AP") -> list[tuple[int, float]]:
    """[(epoch, mean `key` over the runs)] at the epochs (1-based) every run evaluated."""
    per_run = [{e["epoch"] + 1: e[key] for e in run.evaluations} for run in runs]
    if not per_run:
        return []
    common = sorted(set.intersection(*(set(p) for p in per_run)))
    return [(epoch, statistics.fmean(p[epoch] for p in per_run)) for epoch in common]


def plateau_change(curve: list[tuple[int, float]]) -> float | None:
    """Largest |AP(e) - AP(last)| / AP(last) over the evaluated epochs e of the last quarter (e >= 0.75 * last).

    None when the curve has no evaluation in its last quarter other than the last, or its final AP is 0.
    """
    if not curve or curve[-1][1] <= 0:
        return None
    last_epoch, last = curve[-1]
    window = [ap for epoch, ap in curve[:-1] if epoch >= 0.75 * last_epoch]
    if not window:
        return None
    return max(abs(ap - last) / last for ap in window)


def epochs_to_reach(run, target: float) -> tuple[int, float] | None:
    """(epoch, training minutes) of the run's first evaluation with AP >= target; None if none."""
    for record in run.evaluations:
        if record["AP"] >= target:
            return record["epoch"] + 1, record["train_seconds"] / 60
    return None


def _ratio(reference_epochs: int, reached: list[int | None]) -> float | None:
    if not reached or any(r is None for r in reached):
        return None
    return reference_epochs / statistics.fmean(reached)


def bootstrap_ratio(reference_runs: list, runs: list, reference_epochs: int, seed: int = 0) -> list[float] | None:
    """95 % bootstrap interval [low, high] of the epoch ratio, resampling the seeds of both models.

    Each resample draws the reference's runs (their mean final AP is the target) and the model's runs with
    replacement; a resample in which some drawn run never reaches the target counts as ratio 0.
    """
    if not reference_runs or not runs or any(not r.final for r in reference_runs):
        return None
    rng = random.Random(seed)
    ratios = []
    for _ in range(BOOTSTRAP_SAMPLES):
        target = statistics.fmean(rng.choice(reference_runs).final["AP"] for _ in reference_runs)
        drawn = [rng.choice(runs) for _ in runs]
        reached = [epochs_to_reach(run, target) for run in drawn]
        ratio = _ratio(reference_epochs, [r[0] if r else None for r in reached])
        ratios.append(ratio if ratio is not None else 0.0)
    ratios.sort()
    return [ratios[int(0.025 * len(ratios))], ratios[min(len(ratios) - 1, int(0.975 * len(ratios)))]]


def build_summary(runs: list, labels: list[str], reference: str) -> dict[str, Any]:
    """The summary.json object (see the module docstring) of `RunRecord`s; unfinished runs count as they stand."""
    by_label = {label: [r for r in runs if r.label == label] for label in labels}
    reference_runs = [r for r in by_label[reference] if r.final]
    target = statistics.fmean(r.final["AP"] for r in reference_runs) if reference_runs else None
    reference_epochs = max((r.epochs for r in by_label[reference]), default=0)
    curve = mean_curve(reference_runs)
    change = plateau_change(curve)
    models: dict[str, Any] = {}
    ratio: dict[str, float | None] = {}
    ratio_range: dict[str, list[float] | None] = {}
    ratio_bootstrap: dict[str, list[float] | None] = {}
    for label in labels:
        model_runs = by_label[label]
        reached = [epochs_to_reach(r, target) if target is not None else None for r in model_runs]
        entry = {
            "seeds": [r.seed for r in model_runs],
            "final_ap": [r.final.get("AP") for r in model_runs],
            "final_aps": [r.final.get("APs") for r in model_runs],
            "final_ap50": [r.final.get("AP50") for r in model_runs],
            "final_apm": [r.final.get("APm") for r in model_runs],
            "final_apl": [r.final.get("APl") for r in model_runs],
            "epochs": max((r.epochs for r in model_runs), default=0),
            "epochs_to_detr_ap": [hit[0] if hit else None for hit in reached],
            "minutes_to_detr_ap": [round(hit[1], 2) if hit else None for hit in reached],
            "train_minutes": [round(r.train_seconds / 60, 2) for r in model_runs],
            "finished": all(r.finished for r in model_runs),
        }
        models[label] = entry
        if label == reference:
            continue
        epochs_reached = entry["epochs_to_detr_ap"]
        ratio[label] = _ratio(reference_epochs, epochs_reached)
        ratio_range[label] = (
            [reference_epochs / max(epochs_reached), reference_epochs / min(epochs_reached)]
            if ratio[label] is not None
            else None
        )
        ratio_bootstrap[label] = bootstrap_ratio(reference_runs, model_runs, reference_epochs)
    return {
        "models": models,
        "reference": reference,
        "detr_ap": target,
        "detr_plateaued": change is not None and change < PLATEAU_TOLERANCE,
        "detr_plateau_change": change,
        "ratio": ratio,
        "ratio_per_seed_range": ratio_range,
        "ratio_bootstrap_95": ratio_bootstrap,
    }
