"""The convergence experiment's report: per-model summary rows and `report.md`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ..checkpoint.files import atomic_write_text
from ..training.config import TrainConfig

METRIC_KEYS = ("AP", "AP50", "APs", "APm", "APl")


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize_runs(
    runs: list, labels: list[str], reference: str, costs: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """One row per model: mean over seeds of the final metrics, epochs, minutes, s/epoch, and when it reached the
    reference model's final AP (mean over the seeds that reached it; `reached` counts them).

    Args:
        runs: `RunRecord`s of every (model, seed).
        labels: models in report order. reference: label whose final AP is the target.
        costs: per label, `params`, `gflops` (forward at the training size).
    """
    by_label = {label: [r for r in runs if r.label == label] for label in labels}
    target = _mean([r.final["AP"] for r in by_label[reference] if r.final])
    rows = []
    for label in labels:
        model_runs = by_label[label]
        row: dict[str, Any] = {
            "model": label,
            "seeds": len(model_runs),
            "finished": all(r.finished for r in model_runs),
            **costs.get(label, {}),
        }
        for key in METRIC_KEYS:
            row[key] = _mean([r.final[key] for r in model_runs if r.final.get(key, -1) >= 0])  # -1: none of that size
        row["epochs"] = _mean([r.epochs for r in model_runs])
        row["minutes"] = _mean([r.train_seconds / 60 for r in model_runs])
        row["s_per_epoch"] = _mean([r.train_seconds / r.epochs for r in model_runs if r.epochs])
        reached = []
        for run in model_runs:
            hit = next((e for e in run.evaluations if target is not None and e["AP"] >= target), None)
            if hit is not None:
                reached.append((hit["epoch"] + 1, hit["train_seconds"] / 60))
        row["reference_ap"], row["reference_label"] = target, reference
        row["reached"] = len(reached)
        row["epochs_to_reference"] = _mean([e for e, _ in reached])
        row["minutes_to_reference"] = _mean([m for _, m in reached])
        rows.append(row)
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of `summarize_runs` rows."""
    lines = [
        "| model | params | GFLOPs | AP | AP50 | APs | APm | APl | epochs | train min | s / epoch | epochs to ref. AP | min to ref. AP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        reached = row["reached"]
        to_epochs = _fmt(row["epochs_to_reference"], 1) if reached else "not reached"
        to_minutes = _fmt(row["minutes_to_reference"], 1) if reached else "not reached"
        if reached and reached < row["seeds"]:
            to_epochs += f" ({reached}/{row['seeds']} seeds)"
        params = f"{row['params'] / 1e6:.2f}M" if "params" in row else "—"
        name = row["model"] if row["finished"] else f"{row['model']} (unfinished)"
        lines.append(
            f"| {name} | {params} | {_fmt(row.get('gflops'), 2)} | "
            + " | ".join(_fmt(row[k]) for k in METRIC_KEYS)
            + f" | {_fmt(row['epochs'], 1)} | {_fmt(row['minutes'], 1)} | {_fmt(row['s_per_epoch'], 1)} | {to_epochs} | {to_minutes} |"
        )
    return "\n".join(lines)


def _mean_sd_text(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def seeds_table(seeds: dict[str, Any]) -> str:
    """Markdown table of summary.json (`experiments.summary.build_summary`): mean ± sd over seeds, epochs to reach
    the reference's final AP per seed, and the epoch ratio with its per-seed range and bootstrap interval."""
    lines = [
        "| model | seeds | AP | AP50 | APs | APm | APl | epochs | epochs to DETR's AP (per seed) | epoch ratio | "
        "per-seed range | bootstrap 95 % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, entry in seeds["models"].items():
        cells = [
            _mean_sd_text([v for v in entry[key] if v is not None and v >= 0])
            for key in ("final_ap", "final_ap50", "final_aps", "final_apm", "final_apl")
        ]
        reached = ", ".join("not reached" if e is None else str(e) for e in entry["epochs_to_detr_ap"])
        if name == seeds["reference"]:
            ratio_cells = ["reference", "—", "—"]
        else:
            ratio = seeds["ratio"].get(name)
            spread = seeds["ratio_per_seed_range"].get(name)
            boot = seeds["ratio_bootstrap_95"].get(name)
            ratio_cells = [
                f"{ratio:.1f}×" if ratio is not None else "—",
                f"{spread[0]:.1f}–{spread[1]:.1f}×" if spread else "—",
                f"{boot[0]:.1f}–{boot[1]:.1f}×" if boot else "—",
            ]
        lines.append(
            f"| {name} | {len(entry['seeds'])} | "
            + " | ".join(cells)
            + f" | {entry['epochs']} | {reached} | "
            + " | ".join(ratio_cells)
            + " |"
        )
    return "\n".join(lines)


def by_epoch_table(runs: list, labels: list[str], key: str = "AP") -> str:
    """Markdown table: one row per evaluated epoch, one column per model (mean ± sd of `key` over its seeds; — if
    not there)."""
    epochs = sorted({e["epoch"] for run in runs for e in run.evaluations})
    lines = ["| epoch | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
    for epoch in epochs:
        cells = []
        for label in labels:
            values = [e[key] for run in runs if run.label == label for e in run.evaluations if e["epoch"] == epoch]
            cells.append(_mean_sd_text(values))
        lines.append(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of `scaling.measure_scaling` rows plus each model's growth exponents."""
    from .scaling import growth_exponent

    lines = [
        "| model | image | encoder tokens S | encoder GFLOPs | model GFLOPs | encoder ms | model ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['size']}² | {row['tokens']} | {row['encoder_gflops']:.3f} | "
            f"{row['total_gflops']:.2f} | {row['encoder_ms']:.1f} | {row['total_ms']:.1f} |"
        )
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines += [
        "",
        "Growth with the number of encoder tokens S (least-squares slope of log cost vs log S; 2 = quadratic, "
        "1 = linear):",
        "",
        "| model | encoder FLOPs | encoder time | model FLOPs |",
        "|---|---:|---:|---:|",
    ]
    for model in models:
        lines.append(
            f"| {model} | S^{growth_exponent(rows, model):.2f} | S^{growth_exponent(rows, model, 'encoder_ms'):.2f} | "
            f"S^{growth_exponent(rows, model, 'total_gflops'):.2f} |"
        )
    return "\n".join(lines)


def write_report(
    path: Path,
    config,
    data_dir: Path,
    base: TrainConfig,
    summary: list[dict[str, Any]],
    scaling: list[dict[str, Any]],
    runs: list,
    seeds: dict[str, Any] | None = None,
) -> Path:
    """Write report.md (atomically) and return its path; `seeds` is summary.json's object."""

    from ..bench.harness import header

    machine = header(threads=config.threads or None)
    reference = summary[0]["reference_ap"] if summary else None
    budget = (
        f"{config.budget_minutes:g} minutes of training steps per run"
        if config.budget_minutes is not None
        else f"{config.epochs} epochs per run"
    )
    has_detr = any(spec.split(":")[0].rpartition("=")[2].startswith("detr") for spec in config.models)
    detr_lr = " (DETR models × 0.5, as DETR's 1e-4 vs 2e-4)" if has_detr else ""
    lines = [
        "# Convergence: DETR vs Deformable DETR" if has_detr else "# Convergence: Deformable DETR variants",
        "",
        f"Command: `{config.command or 'run_convergence(...)'}`",
        "",
        f"- Seeds: {', '.join(map(str, config.seeds))}; budget: {budget}; evaluation every {config.eval_every} epochs and at the end.",
        f"- Data: `{data_dir}` ("
        + (
            f"synthetic shapes, {config.train_images} train / {config.val_images} val images of up to "
            f"{config.image_size} px, classes {config.classes}"
            + (
                f", {config.objects_per_image[0]}-{config.objects_per_image[1]} objects per image"
                if config.objects_per_image
                else ""
            )
            + (f", objects of {config.object_size[0]:g}-{config.object_size[1]:g} px" if config.object_size else "")
            + f", data seed {config.data_seed}"
            if config.data_dir is None
            else _describe_dataset(data_dir)
        )
        + ").",
        f"- Training (every model): {config.train_size} px, batch {base.batch_size}, bf16 autocast = {base.amp}, AdamW "
        f"lr {base.optim.lr:g}{detr_lr}, {base.optim.warmup_steps} warm-up steps, "
        f"{base.optim.schedule} to {base.optim.min_lr_ratio:g}×, clip {base.optim.clip_max_norm:g}, threads {config.threads or 'default'}.",
        f"- Backbone (every model): {_describe_backbone(config, base)}"
        + (f"; every model has {config.num_queries} queries" if config.num_queries else "")
        + ". A model's own `train.epochs` (in `--models`) replaces the shared budget; its cosine schedule spans it.",
        f"- Machine: {machine.get('machine', '?')}, torch {machine.get('torch', '?')}, load average at report time "
        f"{machine.get('load_average', '?')}, commit {machine.get('git_commit', '?')}.",
        f'- Reference AP ("to ref. AP" columns): the final AP of `{_reference_name(summary)}`, {reference:.3f}.'
        if reference is not None
        else "- Reference AP: none (no finished run).",
        "- GFLOPs: forward of one square image at the training size, counted by `FlopCounterMode` with the deformable "
        "operator's own formula (2 FLOPs per multiply-add). Minutes count training steps only (not evaluation); runs that "
        "trained side by side on a shared machine have noisier minutes than epochs.",
        "",
        *(_seeds_section(seeds) if seeds else []),
        "## Final accuracy and cost (mean over seeds)",
        "",
        summary_table(summary),
        "",
        "![convergence](convergence.png)",
        "",
        "## AP at equal epochs (mean over seeds)",
        "",
        by_epoch_table(runs, [row["model"] for row in summary]),
        "",
        "## Evaluations",
        "",
        "| model | seed | epoch | minutes | AP | AP50 | APs | APm | APl |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for record in run.evaluations:
            lines.append(
                f"| {run.label} | {run.seed} | {record['epoch'] + 1} | {record['train_seconds'] / 60:.1f} | "
                + " | ".join(f"{record[k]:.3f}" if record[k] >= 0 else "—" for k in METRIC_KEYS)
                + " |"
            )
    if scaling:
        lines += [
            "",
            "## Encoder cost vs image size",
            "",
            "Batch 1, square images, inference mode; FLOPs counted as above, times the minimum of 2 forwards on this "
            "machine's CPU (noisy on a shared machine).",
            "",
            scaling_table(scaling),
            "",
            "![scaling](scaling.png)",
        ]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _seeds_section(seeds: dict[str, Any]) -> list[str]:
    change = seeds["detr_plateau_change"]
    plateau = (
        f"changed by at most {100 * change:.1f} % (relative) over its last quarter of epochs: "
        + ("plateaued (< 10 %)." if seeds["detr_plateaued"] else "**not plateaued** (>= 10 %).")
        if change is not None
        else "cannot be judged (no evaluation in its last quarter, or AP 0)."
    )
    target = seeds["detr_ap"]
    return [
        "## Across seeds (summary.json)",
        "",
        f"Target: `{seeds['reference']}`'s final AP, mean over its seeds"
        + (f", {target:.3f}" if target is not None else "")
        + f". Its mean AP {plateau} The epoch ratio is `{seeds['reference']}`'s epochs over the model's mean epochs "
        "to reach the target (— unless every seed reached it); the per-seed range divides by each seed's epochs; the "
        "bootstrap interval resamples the seeds of both models (a resample that never reaches counts as 0).",
        "",
        seeds_table(seeds),
        "",
    ]


def _describe_backbone(config, base: TrainConfig) -> str:
    ratio = base.optim.lr_backbone / base.optim.lr if base.optim.lr else 0.0
    if not config.pretrain_steps:
        return f"randomly initialised, trained at {ratio:g}× the lr"
    record = Path(config.out_dir) / "backbone.json"
    accuracy = json.loads(record.read_text()).get("val_accuracy") if record.is_file() else None
    from .pretrain import PRETRAIN_CLASSES

    return (
        f"pretrained {config.pretrain_steps} steps to classify single {', '.join(PRETRAIN_CLASSES)} (none of the "
        "detected classes; `experiments/pretrain.py`)"
        + (f", validation accuracy {accuracy:.3f}" if accuracy is not None else "")
        + f", then trained at {ratio:g}× the lr"
    )


def _describe_dataset(data_dir: Path) -> str:
    """ "given: N train / M val images" from the splits' annotation files (whatever of that can be read)."""
    counts = []
    for split in ("train", "val"):
        try:
            counts.append(
                f"{len(json.loads((Path(data_dir) / split / 'annotations.json').read_text())['images'])} {split}"
            )
        except (OSError, ValueError, KeyError, TypeError):
            counts.append(f"? {split}")
    return "given: " + " / ".join(counts) + " images"


def _reference_name(summary: list[dict[str, Any]]) -> str:
    return summary[0].get("reference_label", "?") if summary else "?"
