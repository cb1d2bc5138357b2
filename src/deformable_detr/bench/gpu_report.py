"""What `make gpu-check` (bench/gpu_check.py) reports: each step's result, the junit summaries, the headline
figures of each benchmark, the files it leaves (summary JSON, log, tarball) and the table it prints last."""

from __future__ import annotations

import json
import os
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint.files import write_atomic
from .demo import CPU_DEMO_METRICS

LOG_TAIL_BYTES = 60_000  # per step in gpu_check.log (the tarball has everything)


@dataclass
class StepResult:
    """What one step did: status is ok, failed, timeout, skipped (nothing to run here) or not run (budget)."""

    name: str
    status: str = "not run"
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)
    note: str = ""
    result_files: list[str] = field(default_factory=list)


def junit_summary(paths: list[Path]) -> dict[str, Any]:
    """Counts over junit XML files, the failed tests (id, first line of the message) and the skip reasons."""
    counts = Counter(passed=0, failed=0, skipped=0)
    failures, skip_reasons = [], Counter()
    for path in paths:
        try:
            root = ElementTree.parse(path).getroot()
        except (OSError, ElementTree.ParseError):
            continue
        for case in root.iter("testcase"):
            test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
            problem = next((child for child in case if child.tag in ("failure", "error")), None)
            skipped = case.find("skipped")
            if problem is not None:
                counts["failed"] += 1
                message = (problem.get("message") or problem.text or "").strip().splitlines()
                failures.append(
                    {"test": test_id, "kind": problem.tag, "message": (message[0] if message else "")[:300]}
                )
            elif skipped is not None:
                counts["skipped"] += 1
                skip_reasons[(skipped.get("message") or "").strip()[:200]] += 1
            else:
                counts["passed"] += 1
    return {**counts, "failures": failures, "skip_reasons": dict(skip_reasons.most_common())}


def test_note(summary: dict[str, Any]) -> str:
    return f"{summary['passed']} passed, {summary['failed']} failed or errors, {summary['skipped']} skipped"


def figures(name: str, data: Any) -> str:
    """One short line of the headline figures of a step's JSON (best effort: the schemas belong to the benches)."""
    try:
        if name == "env":
            packages = data["packages"]
            return f"{data.get('gpu') or 'no GPU'}; torch {data.get('torch')}, triton {packages.get('triton')}, CUDA {data.get('torch_cuda')}"
        if name in ("gpu-tests", "tests"):
            return test_note(data)
        if name == "op-triton":
            cells = []
            for row in data["rows"]:
                if row["backend"] == "triton" and row["locations"] in ("realistic", "uniform"):
                    cells.append(
                        f"{row['case']} {row['dtype']} {row['forward_ms']:.3f}/{row['forward_backward_ms']:.3f} ms "
                        f"({row['forward_speedup']:.1f}x/{row['forward_backward_speedup']:.1f}x ref)"
                    )
            return "; ".join(cells[:4])
        if name == "model":
            return "; ".join(
                f"b{b['batch']} fp32 {b['ours']['fp32_ms']:.1f} vs HF {b['hf']['fp32_ms']:.1f} ms, "
                f"bf16 {b['ours']['bf16_ms']:.1f} vs {b['hf']['bf16_ms']:.1f} ms"
                for b in data["by_batch"]
            )
        if name == "predict":
            best = {}
            for row in data["results"]:
                best[(row["size"], row["batch"], row["method"])] = row["images_per_s"]
            return "; ".join(f"{m} {s}px b{b}: {v:.0f} img/s" for (s, b, m), v in list(best.items())[:6])
        if name == "train":
            rows = {(r["impl"], r["precision"], r["phase"]): r for r in data["runs"]}
            parts = [
                f"{p} step ours {rows['ours', p, 'step']['min_ms']:.0f} vs HF {rows['hf', p, 'step']['min_ms']:.0f} ms"
                for p in ("fp32", "bf16")
                if ("ours", p, "step") in rows
            ]
            reference = data.get("reference_implementation")
            if reference:
                parts.append(f"fp32 fwd+bwd vs reference 98 ms: {reference.get('speedup_fp32_fwd_bwd', 0):.2f}x")
            return "; ".join(parts)
        if name == "demo":
            train, metrics = data["train"], data["evaluation"]["metrics"]
            cpu_ap = CPU_DEMO_METRICS["AP"]
            ap = f"AP {metrics['AP']:.3f} (CPU demo {cpu_ap:.3f})" if metrics else "AP pending (pycocotools missing)"
            return f"{train['steps']} steps in {train['train_seconds']:.0f} s ({1e3 * train['s_per_step']:.0f} ms/step); {ap}"
    except (KeyError, TypeError, ValueError, IndexError) as error:
        return f"(figures not read: {type(error).__name__} {error})"
    return ""


def write_outputs(check, header: dict, results: list[StepResult], data: dict[str, Any], started: float) -> None:
    """gpu_check_summary.json, gpu_check.log and gpu_check_files.tar.gz in check.out (a `gpu_check_steps.Check`),
    rewritten after every step."""
    check.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "header": header,
        "smoke": check.smoke,
        "seconds": round(time.monotonic() - started, 1),
        "steps": [asdict(r) for r in results],
        "data": data,
    }
    summary_text = json.dumps(summary, indent=1, default=str) + "\n"
    write_atomic(check.out / "gpu_check_summary.json", lambda path: path.write_text(summary_text))
    parts = []
    for result in results:
        log = check.logs / f"{result.name}.log"
        if log.is_file():
            text = log.read_bytes()
            if len(text) > LOG_TAIL_BYTES:
                text = b"[... start cut; the full log is in gpu_check_files.tar.gz]\n" + text[-LOG_TAIL_BYTES:]
            parts.append(
                f"===== {result.name}: {result.status} ({result.seconds:.0f} s)\n{text.decode(errors='replace')}"
            )
    write_atomic(check.out / "gpu_check.log", lambda path: path.write_text("\n".join(parts)))
    write_atomic(check.out / "gpu_check_files.tar.gz", lambda path: _archive(check, results, path))


def _archive(check, results: list[StepResult], path: Path) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for result in results:
            for file in result.result_files:
                archive.add(file, arcname=os.path.relpath(file) if not check.smoke else f"results/{Path(file).name}")
        for folder, arcname in ((check.work / "junit", "junit"), (check.logs, "logs")):
            if folder.is_dir():
                archive.add(folder, arcname=arcname)
        demo = check.work / "demo"
        for file, arcname in (
            (demo / "val_detections" / "detections.json", "demo/val_detections.json"),
            (demo / "data" / "val" / "annotations.json", "demo/val_annotations.json"),
        ):
            if file.is_file():
                archive.add(file, arcname=arcname)


def format_report(header: dict, results: list[StepResult], data: dict[str, Any], seconds: float, budget: float) -> str:
    """Test failures, skip reasons, then the summary table (printed last)."""
    lines = []
    for name in ("gpu-tests", "tests"):
        summary = data.get(name)
        if not summary:
            continue
        if summary["failures"]:
            lines.append(f"--- {name}: {len(summary['failures'])} failed")
            lines += [f"  {f['test']}: {f['message']}"[:240] for f in summary["failures"][:40]]
        if summary.get("files_not_ok"):
            lines.append(
                f"--- {name}: files not ok: "
                + ", ".join(f"{k} ({v})" for k, v in summary["files_not_ok"].items())[:1500]
            )
        if summary["skip_reasons"]:
            lines.append(f"--- {name}: skip reasons (count)")
            lines += [f"  {count:4d}  {reason}"[:200] for reason, count in list(summary["skip_reasons"].items())[:12]]
    env = data.get("env") or {}
    lines.append(
        f"===== gpu-check{' (SMOKE: CPU dry run)' if header['smoke'] else ''}: {env.get('gpu') or 'no GPU'}, "
        f"torch {env.get('torch')}, triton {(env.get('packages') or {}).get('triton')}; {seconds:.0f} s of a {budget:.0f} s budget"
    )
    lines.append(f"{'step':<10} {'status':<8} {'s':>5}  result")
    for result in results:
        text = figures(result.name, data.get(result.name)) if data.get(result.name) else ""
        note = result.note if result.status not in ("ok",) or not text else ""
        lines.append(
            f"{result.name:<10} {result.status:<8} {result.seconds:5.0f}  {'; '.join(x for x in (text, note) if x)}"[
                :400
            ]
        )
    rest = [r.name for r in results if r.status == "not run"]
    if rest:
        lines.append(f"not run (budget): make gpu-check GPU_CHECK_ARGS='--steps {' '.join(rest)}'")
    return "\n".join(lines)


def bench_table(name: str, data: dict[str, Any]) -> str:
    """The bench's own table (its format function), for the console."""
    from importlib import import_module

    module, function = {
        "op-triton": ("op_triton", "format_table"),
        "model": ("model", "format_model_benchmark"),
        "predict": ("predict", "format_predict_benchmark"),
        "train": ("train", "format_training_benchmark"),
        "demo": ("demo", "format_demo_benchmark"),
    }[name]
    formatter = getattr(import_module(f"deformable_detr.bench.{module}"), function)
    return f"--- {name}\n" + formatter(data["rows"] if name == "op-triton" else data)
