"""The report's learned-path cost section (input dependence of the gates) and its plot panel."""

from __future__ import annotations

import numpy as np
import pytest

import ddi_tf  # noqa: F401
from ddi_tf.core.config import ModelConfig
from ddi_tf.evaluation import policies
from ddi_tf.evaluation.evaluate import evaluate_model, learned_cost
from ddi_tf.evaluation.plots import plot_report

TINY = ModelConfig(depth=8, groups=2, exits=(1,), exit_width=8, gate_hidden=4)


def _outputs(last_cost: list[float], last_pred: list[int], labels: list[int]) -> policies.ExitOutputs:
    n = len(labels)
    cost = np.stack([np.full(n, 5.0), np.asarray(last_cost, np.float64)], axis=1)
    pred = np.stack([np.zeros(n, np.int64), np.asarray(last_pred)], axis=1)
    return policies.ExitOutputs(probs_max=np.full((n, 2), 0.5), pred=pred, cost=cost,
                                reached=np.ones((n, 2), bool), labels=np.asarray(labels))


def test_learned_cost_splits_the_learned_path_cost_by_what_the_full_path_gets_right():
    labels = [0, 1, 2, 3, 4]
    learned = _outputs([10, 20, 30, 40, 50], [9, 9, 9, 9, 9], labels)  # its own predictions do not matter
    full_path = _outputs([100] * 5, [0, 1, 0, 0, 4], labels)  # right on images 0, 1 and 4
    lc = learned_cost(learned, full_path, full=100.0)
    assert lc["mean_ratio"] == pytest.approx(0.3)
    assert (lc["p10_ratio"], lc["p50_ratio"], lc["p90_ratio"]) == pytest.approx((0.14, 0.3, 0.46))
    assert lc["std_ratio"] == pytest.approx(np.sqrt(0.02))
    assert lc["mean_ratio_full_path_correct"] == pytest.approx((0.1 + 0.2 + 0.5) / 3)
    assert lc["mean_ratio_full_path_wrong"] == pytest.approx(0.35)
    assert (lc["correct_count"], lc["wrong_count"]) == (3, 2)
    assert lc["mean_macs"] == pytest.approx(30.0) and lc["p90_macs"] == pytest.approx(46.0)
    h = lc["histogram"]
    assert len(h["bin_edges"]) == len(h["full_path_correct"]) + 1 and h["bin_edges"][0] == 0 and h["bin_edges"][-1] == 1
    assert sum(h["full_path_correct"]) == 3 and sum(h["full_path_wrong"]) == 2
    centers = (np.asarray(h["bin_edges"][:-1]) + np.asarray(h["bin_edges"][1:])) / 2
    width = h["bin_edges"][1] - h["bin_edges"][0]
    assert np.average(centers, weights=h["full_path_wrong"]) == pytest.approx(0.35, abs=width)
    everyone_right = learned_cost(learned, _outputs([100] * 5, labels, labels), full=100.0)
    assert everyone_right["mean_ratio_full_path_wrong"] is None and everyone_right["wrong_count"] == 0


def test_learned_cost_needs_the_unbudgeted_path_of_the_same_images():
    learned = _outputs([10, 20], [0, 0], [0, 1])
    with pytest.raises(ValueError, match="same images"):
        learned_cost(learned, _outputs([10, 20], [0, 0], [1, 1]), full=100.0)
    learned.reached[1, -1] = False
    with pytest.raises(ValueError, match="without a budget"):
        learned_cost(learned, learned, full=100.0)


@pytest.fixture(scope="module")
def tiny_reports():
    """Reports of an untrained tiny gated model and of its static backbone on synthetic images."""
    import dataclasses

    from ddi_tf.data import normalization_for, synthetic_cifar
    from ddi_tf.model.build import build_model

    data = synthetic_cifar(16, 40, 10, seed=0)
    mean, std = normalization_for("cifar10")
    reports = {}
    for name, cfg in (("gated", TINY), ("static", dataclasses.replace(TINY, gate_type="none", exits=()))):
        reports[name] = evaluate_model(cfg, build_model(cfg), (data.x_test[:0], data.y_test[:0]),
                                       (data.x_test, data.y_test), mean, std, (1.0,), (), batch_size=20)
    return reports


def test_report_of_a_gated_model_has_its_learned_cost(tiny_reports):
    rep = tiny_reports["gated"]
    lc = rep["learned_cost"]
    assert lc["p10_ratio"] <= lc["p50_ratio"] <= lc["p90_ratio"] <= 1.0
    assert lc["correct_count"] + lc["wrong_count"] == rep["test_examples"] == 40
    # the same pass as the report's own rows: learned gates to the last exit, full path's last exit
    assert lc["mean_ratio"] * rep["full_macs"] == pytest.approx(rep["exits_learned_gates"][-1]["mean_macs"])
    assert lc["correct_count"] / 40 == pytest.approx(rep["exits_all_full"][-1]["accuracy"])
    means = [(m, n) for m, n in ((lc["mean_ratio_full_path_correct"], lc["correct_count"]),
                                 (lc["mean_ratio_full_path_wrong"], lc["wrong_count"])) if n]
    assert sum(m * n for m, n in means) / 40 == pytest.approx(lc["mean_ratio"])
    assert tiny_reports["static"]["learned_cost"] is None


def test_report_plot_gains_the_cost_histogram_panel(tiny_reports, tmp_path):
    import matplotlib.image

    plot_report({"": tiny_reports["gated"]}, str(tmp_path / "gated.png"))
    plot_report({"": tiny_reports["static"]}, str(tmp_path / "static.png"))
    plot_report(tiny_reports, str(tmp_path / "both.png"))
    widths = {k: matplotlib.image.imread(str(tmp_path / f"{k}.png")).shape[1] for k in ("gated", "static", "both")}
    assert widths["gated"] == widths["both"] > 1.5 * widths["static"]


def test_plot_report_takes_more_reports_than_it_has_markers(tmp_path):
    """A side-by-side plot of many runs (seeds x models) once ran out of markers (StopIteration at the 11th)."""
    import json
    from pathlib import Path

    from ddi_tf.evaluation.plots import plot_report

    rep = json.loads((Path(__file__).resolve().parents[1] / "docs/results/report_cifar_cpu.json").read_text())
    plot_report({f"run {i}": rep for i in range(14)}, str(tmp_path / "many.png"))
    assert (tmp_path / "many.png").stat().st_size > 0
