"""The shared benchmark harness: header fields, interleaving order, minimum, RSS probes, atomic JSON."""

from __future__ import annotations

import json

from deformable_detr.bench import harness


def test_header_has_machine_threads_versions_load_commit():
    info = harness.header(threads=3, extra_field="x")
    assert info["threads"] == 3 and info["extra_field"] == "x"
    for key in ("machine", "cpu_count", "torch", "python", "load_average", "git_commit", "date_utc"):
        assert key in info


def test_interleaved_times_alternate_and_min_is_the_smallest():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = harness.interleaved_times(fns, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-ups first, then one call of each per round
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    summary = harness.summarize([0.3, 0.1, 0.2])
    assert summary["min_s"] == 0.1 and summary["median_s"] == 0.2 and summary["max_s"] == 0.3


def test_rss_probes_see_a_large_allocation():
    before = harness.reset_peak_rss_mib()
    block = bytearray(64 * 2**20)  # 64 MiB, touched
    for i in range(0, len(block), 4096):
        block[i] = 1
    assert harness.peak_rss_mib() - before > 50
    assert harness.rss_mib() > 0
    del block


def test_write_result_is_json_and_leaves_no_temp(tmp_path):
    path = harness.write_result(tmp_path / "sub" / "r.json", {"header": {"a": 1}, "x": [1, 2]})
    assert json.loads(path.read_text()) == {"header": {"a": 1}, "x": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
