"""The side-by-side comparison of training reports and the trade-off JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ddi_tf.evaluation.compare import (
    CompareError,
    envelope_table,
    markdown,
    pareto,
    parse_kinds,
    parse_reports,
    tradeoff,
    tradeoff_markdown,
)

REPO = Path(__file__).resolve().parents[1]


def _report(backbone: float, rows: list[tuple[float, float]]) -> dict:
    return {"backbone_macs": backbone,
            "anytime": [{"budget_fraction": m / backbone, "accuracy": a, "mean_macs": m, "max_macs": m,
                         "over_budget": 0} for m, a in rows]}


def test_envelope_takes_the_best_point_at_or_below_each_cost():
    reports = {"a": _report(100.0, [(25.0, 0.5), (50.0, 0.7), (100.0, 0.9)]), "b": _report(100.0, [(100.0, 0.95)])}
    table = envelope_table(reports, fractions=(0.2, 0.25, 0.6, 1.0)).splitlines()
    assert table[4] == "| 0.20 (0.0M) | - | - |"
    assert table[5] == "| 0.25 (0.0M) | 50.00 | - |"
    assert table[6] == "| 0.60 (0.0M) | 70.00 | - |"
    assert table[7] == "| 1.00 (0.0M) | 90.00 | 95.00 |"
    assert "| a | anytime budget (gates full) | budget 0.25 | 50.00 |" in markdown(reports)


def test_pareto_keeps_only_points_nothing_beats():
    points = [(10.0, 0.5, "a"), (20.0, 0.4, "b"), (20.0, 0.7, "c"), (30.0, 0.7, "d"), (40.0, 0.8, "e")]
    assert pareto(points) == [(10.0, 0.5), (20.0, 0.7), (40.0, 0.8)]


def test_envelope_in_energy_and_latency_uses_the_full_path_and_says_what_is_missing():
    a = _report(100.0, [(25.0, 0.5), (100.0, 0.9)])
    a["full_uj"] = 10.0
    a["anytime"][0]["mean_uj"], a["anytime"][1]["mean_uj"] = 3.0, 9.0
    b = _report(100.0, [(100.0, 0.95)])  # an older report: MACs only
    reports = {"a": a, "b": b}
    table = envelope_table(reports, fractions=(0.25, 0.5, 1.0), unit="uj").splitlines()
    assert table[4] == "| 0.25 (2.5) | - | n/a |"
    assert table[5] == "| 0.50 (5) | 50.00 | n/a |"
    assert table[6] == "| 1.00 (10) | 90.00 | n/a |"
    text = markdown(reports)
    assert "mean energy" in text and "mean latency" not in text
    assert "| a | anytime budget (gates full) | budget 0.25 | 50.00 | 0.00 (0.25x) | 0.00 | 0 | 3 | - |" in text


def test_latencies_compare_only_under_one_latency_table():
    a, b, c = (_report(100.0, [(50.0, 0.7), (100.0, 0.9)]) for _ in range(3))
    for rep, sha in ((a, "t1"), (b, "t1"), (c, "t2")):
        rep.update(full_ms=2.0, latency_table="lat.json", latency_table_sha256=sha)
        rep["anytime"][0]["mean_ms"], rep["anytime"][1]["mean_ms"] = 1.0, 2.0
    table = envelope_table({"a": a, "b": b, "c": c}, fractions=(0.5,), unit="ms").splitlines()
    assert table[-1] == "| 0.50 (1) | 70.00 | 70.00 | n/a |"


# --- the trade-off JSON (--json) ----------------------------------------------------------------------------
def _model_report(gate_type: str, exits: list[int], groups: int, full: float, rows: dict[str, list[tuple]],
                  learned_ratio: float | None = None) -> dict:
    """A report with ``rows`` {key: [(mean MACs, accuracy), ...]}; its full path is the last exits_all_full row."""
    rep = {"model": {"gate_type": gate_type, "exits": exits, "groups": groups}, "full_macs": full,
           "backbone_macs": 100.0, "learned_cost": None if learned_ratio is None else {"mean_ratio": learned_ratio}}
    for key, points in rows.items():
        rep[key] = [{"accuracy": a, "mean_macs": m, "max_macs": m, "exit": i, "position": i + 1, "threshold": 0.5,
                     "budget_fraction": m / 100, "target_fraction": m / 100} for i, (m, a) in enumerate(points)]
    return rep


def _static(full: float, acc: float) -> dict:
    return _model_report("none", [], 4, full, {"exits_all_full": [(full, acc)], "anytime": [(full, acc)]})


DDI_SEEDS = [
    _model_report("ff", [2], 4, 110.0, {"exits_all_full": [(20.0, 0.50), (110.0, 0.82)], "threshold": [(45.0, 0.70)],
                                        "ddi": [(90.0, 0.80)]}, learned_ratio=0.8),
    _model_report("ff", [2], 4, 110.0, {"exits_all_full": [(28.0, 0.54), (110.0, 0.83)],
                                        "budget_deferred": [(50.0, 0.74)],
                                        "exits_learned_gates": [(28.0, 0.5), (100.0, 0.84)]}, learned_ratio=0.6),
]


def _runs() -> dict[str, list[dict]]:
    return {"DDI": DDI_SEEDS, "static": [_static(100.0, 0.90), _static(100.0, 0.92)], "ResNet-8": [_static(30.0, 0.8)],
            "exits": [_model_report("none", [2], 4, 105.0, {"exits_all_full": [(20.0, 0.6), (105.0, 0.88)]})],
            "layer": [_model_report("ff", [2], 1, 105.0, {"exits_all_full": [(20.0, 0.6), (105.0, 0.88)]},
                                    learned_ratio=0.9)]}


def test_tradeoff_means_seeds_per_level_and_is_null_where_a_seed_has_nothing_that_cheap():
    t = tradeoff(_runs())
    out = t.json
    assert out["levels"] == [0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
    assert out["static_macs"] == 100.0 and t.static == "static"  # the static model with the most MACs
    ddi = out["models"]["DDI"]
    # seed 2 has nothing at <= 25 MACs; at 1.0 both count a point exactly at the static MACs (90 and 100)
    assert ddi["best_accuracy"] == pytest.approx([None, 0.52, 0.52, 0.72, 0.72, 0.72, 0.82])
    assert ddi["best_accuracy"][0] is None
    assert t.per_seed["DDI"]["best_accuracy"][0] == [0.50, None]
    assert ddi["seeds"] == 2 and ddi["kind"] == "ddi"
    assert ddi["learned_cost_ratio"] == pytest.approx(0.7)
    static = out["models"]["static"]
    assert static["best_accuracy"] == [None] * 6 + [pytest.approx(0.91)]
    assert static["learned_cost_ratio"] is None and static["target_cost"] is None
    assert out["models"]["ResNet-8"]["best_accuracy"] == [None] + [0.8] * 6
    assert {k: m["kind"] for k, m in out["models"].items()} == {
        "DDI": "ddi", "static": "static", "ResNet-8": "static_small", "exits": "exits_only", "layer": "layer_only"}
    table = tradeoff_markdown(t)
    assert "| DDI | ddi | 2 | - (50.00, -) | 52.00 (50.00, 54.00) |" in table
    assert table.rstrip().endswith("| layer | layer_only | 1 | " + "60.00 | " * 7 + "0.900 | - |")


def test_tradeoff_static_reference_and_kinds_can_be_named():
    t = tradeoff(_runs(), kinds={"DDI": "layer_only"}, static="ResNet-8")
    assert t.json["static_macs"] == 30.0
    kinds = {k: m["kind"] for k, m in t.json["models"].items()}
    assert kinds["DDI"] == "layer_only" and kinds["ResNet-8"] == "static" and kinds["static"] == "static"
    assert t.json["models"]["DDI"]["best_accuracy"][-1] == pytest.approx(0.52)  # <= 1.0 x 30 MACs


@pytest.mark.parametrize("runs, kwargs, fragment", [
    ({}, {}, "no reports"),
    ({"DDI": DDI_SEEDS}, {}, "no static model"),
    (None, {"static": "DDI"}, "not a static one"),
    (None, {"static": "nope"}, "not a label"),
    ({"DDI": DDI_SEEDS, "static": [_static(100.0, 0.9)], "old": [{"full_macs": 50.0}]}, {}, "old: the report has no "),
    ({"DDI": [DDI_SEEDS[0], _static(110.0, 0.9)], "static": [_static(100.0, 0.9)]}, {}, "different kinds"),
    ({"static": [_static(100.0, 0.9), _static(90.0, 0.9)]}, {}, "different full MACs"),
])
def test_tradeoff_bad_input_says_what_is_wrong(runs, kwargs, fragment):
    with pytest.raises(CompareError, match=fragment):
        tradeoff(_runs() if runs is None else runs, **kwargs)


def test_report_and_kind_arguments_are_checked(tmp_path):
    a = tmp_path / "a.json"
    a.write_text("{}")
    assert parse_reports([f"A={a}+{a}", f"B+QAT={a}"]) == {"A": [str(a), str(a)], "B+QAT": [str(a)]}
    for items, fragment in (([], "empty"), ([f"A={a}+"], "not found"), ([f"A={a}+{tmp_path}/b.json"], "b.json"),
                            ([str(a)], "expected label=path"), ([f"A={a}", f"A={a}"], "twice")):
        with pytest.raises(CompareError, match=fragment):
            parse_reports(items)
    assert parse_kinds(["A=static_small"], ["A"]) == {"A": "static_small"}
    with pytest.raises(CompareError, match="unknown kind 'dynamic'"):
        parse_kinds(["A=dynamic"], ["A"])
    with pytest.raises(CompareError, match="not a label"):
        parse_kinds(["C=ddi"], ["A"])


def _write_run(root: Path, name: str, rep: dict, target: float | None = None) -> str:
    d = root / name
    d.mkdir()
    (d / "report.json").write_text(json.dumps(rep))
    if target is not None:
        (d / "config.json").write_text(json.dumps({"model": rep["model"], "train": {"target_cost": target}}))
    return str(d / "report.json")


def test_compare_json_cli_writes_the_contract_and_the_table(tmp_path):
    d1, d2 = (_write_run(tmp_path, f"ddi{i}", rep, target=0.5) for i, rep in enumerate(DDI_SEEDS))
    s = _write_run(tmp_path, "static", _static(100.0, 0.9), target=0.5)  # ungated: its target_cost is not used
    out, md = tmp_path / "res" / "tradeoff.json", tmp_path / "res" / "cmp"
    cmd = [sys.executable, "-m", "ddi_tf.compare", f"--reports=DDI={d1}+{d2},static={s}", f"--json={out}"]
    proc = subprocess.run([*cmd, f"--out={md}"], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    assert set(got) == {"levels", "static_macs", "models"}
    assert got["models"]["DDI"] == {"kind": "ddi", "seeds": 2, "best_accuracy": got["models"]["DDI"]["best_accuracy"],
                                    "learned_cost_ratio": pytest.approx(0.7), "target_cost": 0.5}
    assert got["models"]["static"]["target_cost"] is None
    assert "| DDI | ddi | 2 |" in proc.stdout
    text = (tmp_path / "res" / "cmp.md").read_text()
    assert "| DDI #2 | thresholds" not in text and "| DDI #2 | budget, exits deferred |" in text
    assert "| DDI | ddi | 2 |" in text
    bad = subprocess.run([*cmd[:3], f"--reports=DDI={d1}+{tmp_path}/missing.json", f"--json={out}"],
                         capture_output=True, text=True, cwd=REPO, check=False)
    assert bad.returncode == 2 and "missing.json" in bad.stderr and "not found" in bad.stderr
    bad = subprocess.run([*cmd, "--kinds=DDI=dynamic"], capture_output=True, text=True, cwd=REPO, check=False)
    assert bad.returncode != 0 and "--kinds items are label=kind" in bad.stderr
