"""The side-by-side comparison of training reports."""

from ddi_tf.compare import envelope_table, markdown, pareto


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
