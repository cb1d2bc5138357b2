"""summary.json's statistics on hand-made run histories, each checked against numbers worked out by hand."""

import pytest

from deformable_detr.experiments.convergence import RunRecord
from deformable_detr.experiments.summary import (
    bootstrap_ratio,
    build_summary,
    epochs_to_reach,
    mean_curve,
    plateau_change,
)


def _run(label, seed, aps, every=1, seconds_per_epoch=60.0, aps_small=None):
    """A RunRecord evaluated at epochs every, 2*every, ... (1-based) with the given APs."""
    history = []
    for index, ap in enumerate(aps):
        epoch = (index + 1) * every - 1
        history.append(
            {
                "epoch": epoch,
                "train_seconds": (epoch + 1) * seconds_per_epoch,
                "AP": ap,
                "AP50": 2 * ap,
                "APs": (aps_small or aps)[index],
                "APm": ap,
                "APl": -1.0,
            }
        )
    return RunRecord(label, seed, None, history, len(aps) * every, len(aps) * every * seconds_per_epoch)


def test_mean_curve_keeps_only_epochs_every_seed_evaluated():
    a = _run("m", 0, [0.1, 0.2, 0.3])
    b = _run("m", 1, [0.3, 0.4, 0.5])
    b.history = b.history[:2]
    assert mean_curve([a, b]) == [(1, pytest.approx(0.2)), (2, pytest.approx(0.3))]


def test_plateau_change_is_the_largest_relative_move_in_the_last_quarter():
    # 20 epochs: the last quarter is epochs 15..20; epoch 15 has 0.27 vs final 0.30 -> 10 %
    curve = [(e, ap) for e, ap in zip(range(5, 21, 5), (0.1, 0.2, 0.27, 0.30))]
    assert plateau_change(curve) == pytest.approx(0.1)
    assert plateau_change([(10, 0.1), (20, 0.3)]) is None  # nothing in the last quarter but the end
    assert plateau_change([(15, 0.0), (20, 0.0)]) is None


def test_epochs_to_reach_is_the_first_evaluation_at_or_above():
    run = _run("m", 0, [0.1, 0.25, 0.2, 0.3], every=2, seconds_per_epoch=30)
    assert epochs_to_reach(run, 0.25) == (4, 2.0)
    assert epochs_to_reach(run, 0.31) is None


def test_summary_schema_ratio_and_plateau():
    detr = [
        _run("detr", s, [0.05 * k for k in range(1, 9)][:7] + [final], every=5) for s, final in ((0, 0.3), (1, 0.34))
    ]
    # DETR: 40 epochs, final mean AP 0.32; last quarter (epochs >= 30): 0.30 at epochs 30 and 35 vs 0.32 -> 6.25 %
    for run, last_but_one in zip(detr, (0.30, 0.30)):
        run.history[-2]["AP"] = last_but_one
    fast = [_run("fast", 0, [0.1, 0.33, 0.4, 0.5]), _run("fast", 1, [0.2, 0.25, 0.32, 0.5])]
    slow = [_run("slow", 0, [0.1, 0.2, 0.2, 0.2]), _run("slow", 1, [0.1, 0.4, 0.4, 0.4])]
    summary = build_summary(detr + fast + slow, ["detr", "fast", "slow"], "detr")

    assert set(summary["models"]["fast"]) >= {"seeds", "final_ap", "final_aps", "epochs", "epochs_to_detr_ap"}
    assert summary["detr_ap"] == pytest.approx(0.32)
    assert summary["detr_plateau_change"] == pytest.approx(abs(0.30 - 0.32) / 0.32)
    assert summary["detr_plateaued"] is True
    assert summary["models"]["detr"]["epochs"] == 40
    assert summary["models"]["fast"]["epochs_to_detr_ap"] == [2, 3]
    assert summary["ratio"]["fast"] == pytest.approx(40 / 2.5)
    assert summary["ratio_per_seed_range"]["fast"] == pytest.approx([40 / 3, 40 / 2])
    assert summary["models"]["slow"]["epochs_to_detr_ap"] == [None, 2]
    assert summary["ratio"]["slow"] is None  # one seed never reached DETR's AP
    assert "detr" not in summary["ratio"]
    assert summary["models"]["fast"]["final_ap"] == [0.5, 0.5]
    assert summary["models"]["fast"]["minutes_to_detr_ap"] == [2.0, 3.0]


def test_not_plateaued_when_still_climbing():
    detr = [_run("detr", 0, [0.05, 0.1, 0.15, 0.2], every=5)]
    summary = build_summary(detr, ["detr"], "detr")
    assert summary["detr_plateau_change"] == pytest.approx(0.25)
    assert summary["detr_plateaued"] is False


def test_bootstrap_interval_brackets_every_per_seed_ratio():
    detr = [_run("detr", s, [0.1, final], every=20) for s, final in enumerate((0.28, 0.30, 0.32))]
    model = [_run("m", s, [0.1, 0.2] + [0.35] * 8) for s in range(3)]
    for run, epoch in zip(model, (3, 4, 5)):  # seed s first reaches 0.35 at epoch 3, 4, 5
        for record in run.history[2 : epoch - 1]:
            record["AP"] = 0.25
    low, high = bootstrap_ratio(detr, model, 40)
    assert 40 / 5 <= low <= 40 / 4 <= high <= 40 / 3
    assert bootstrap_ratio(detr, model, 40) == [low, high]  # seeded: the same interval again
