"""Models side by side: the per-row Markdown table of reports, the envelope at equal cost, and the trade-off of
several models over seeds (``python -m ddi_tf.compare``, whose docstring shows the command, writes them)."""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from ddi_tf.core import names, rundir

KINDS = ("ddi", "exits_only", "layer_only", "static", "static_small")


def _fmt_row(label: str, policy: str, setting: str, r: dict, ref_macs: float) -> str:
    return (f"| {label} | {policy} | {setting} | {100 * r['accuracy']:.2f} | {r['mean_macs'] / 1e6:.2f} "
            f"({r['mean_macs'] / ref_macs:.2f}x) | {r['max_macs'] / 1e6:.2f} | {r.get('over_budget', 0)} | "
            + " | ".join(f"{r[k]:.4g}" if k in r else "-" for k in ("mean_uj", "mean_ms")) + " |")


def markdown(reports: dict[str, dict]) -> str:
    """A Markdown table of every policy row of every report; MACs also relative to the first report's
    static backbone MACs."""
    ref = next(iter(reports.values()))["backbone_macs"]
    lines = [f"MACs relative to the static backbone body ({ref / 1e6:.2f}M MACs).", "",
             "| model | policy | setting | test accuracy (%) | mean MMACs (x backbone) | max MMACs | over budget "
             "| mean uJ | mean ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, rep in reports.items():
        for r in rep.get("exits_all_full", []):
            setting = f"{names.exit(r['exit'])} (after block {r['position']})"
            lines.append(_fmt_row(label, "exit, gates full", setting, r, ref))
        for r in rep.get("exits_learned_gates", []):
            lines.append(_fmt_row(label, "exit, learned gates", names.exit(r['exit']), r, ref))
        for r in rep.get("anytime", []):
            lines.append(_fmt_row(label, "anytime budget (gates full)", f"budget {r['budget_fraction']:.2f}", r, ref))
        for r in rep.get("budget_deferred", []):
            lines.append(_fmt_row(label, "budget, exits deferred", f"budget {r['budget_fraction']:.2f}", r, ref))
        for r in rep.get("threshold", []):
            lines.append(_fmt_row(label, "thresholds (learned gates)",
                                  f"target {r['target_fraction']:.2f}, t={r['threshold']:.3f}", r, ref))
        for r in rep.get("ddi_pareto", []):
            lines.append(_fmt_row(label, "DDI (pareto)", f"budget {r['budget_fraction']:.2f}, t={r['threshold']:.3f}",
                                  r, ref))
    for unit in units_present(reports):
        lines += ["", envelope_table(reports, unit=unit)]
    return "\n".join(lines) + "\n"


ENVELOPE_FRACTIONS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
"""Mean-cost levels of the side-by-side table: fractions of the first report's static backbone MACs, or of its
full path (every piece at its widest) in energy and latency."""

UNIT_NAMES = {"macs": "MACs", "uj": "energy (uJ, int8 energy model)", "ms": "latency (ms, measured per-piece table)"}


def operating_points(rep: dict, unit: str = "macs", latency_sha256: str | None = None
                     ) -> list[tuple[float, float, str]]:
    """Every evaluated (mean cost, accuracy, policy) of a report in ``unit`` (``macs``, ``uj`` or ``ms``): all
    exits, anytime, thresholds, DDI. Rows without that unit (older reports, no latency table) are left out, and
    so are latencies from a table other than ``latency_sha256`` when given (estimates from different tables,
    measured at different times, do not compare)."""
    if unit == "ms" and latency_sha256 is not None and rep.get("latency_table_sha256") != latency_sha256:
        return []
    points = []
    for key in ("exits_all_full", "exits_learned_gates", "anytime", "budget_deferred", "threshold", "ddi",
                "ddi_pareto"):
        for r in rep.get(key, []):
            if f"mean_{unit}" in r:
                points.append((float(r[f"mean_{unit}"]), float(r["accuracy"]), key))
    return points


def _reference(rep: dict, unit: str) -> float | None:
    return rep.get("backbone_macs") if unit == "macs" else rep.get(f"full_{unit}")


def envelope_table(reports: dict[str, dict], fractions=ENVELOPE_FRACTIONS, unit: str = "macs") -> str:
    """Best test accuracy of each model at a mean cost of at most each fraction of a reference cost (over every
    operating point its report evaluated): the models side by side at equal mean cost. The reference is the
    first report's static backbone MACs, or its full-path energy or latency."""
    first_label, first = next(iter(reports.items()))
    ref = _reference(first, unit)
    if not ref:
        return f"(no {UNIT_NAMES[unit]} in the report of {first_label})"
    labels = list(reports)
    what = "static backbone" if unit == "macs" else f"the full path of {first_label}"
    scale, fmt = (1e-6, "{:.1f}M") if unit == "macs" else (1.0, "{:.3g}")
    lines = [f"Best accuracy (%) at mean {UNIT_NAMES[unit]} <= fraction x {what} (any evaluated policy; "
             "- : none that cheap; n/a: not measured in this unit).", "",
             f"| mean {unit} <= | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    sha = first.get("latency_table_sha256") if unit == "ms" else None
    if unit == "ms":
        lines[0] += f" Latencies only from the latency table of {first_label} ({first.get('latency_table')})."
    points = {label: operating_points(rep, unit, sha) for label, rep in reports.items()}
    for f in fractions:
        cells = []
        for label in labels:
            ok = [acc for cost, acc, _ in points[label] if cost <= f * ref * (1 + 1e-9)]
            cells.append(f"{100 * max(ok):.2f}" if ok else "-" if points[label] else "n/a")
        lines.append(f"| {f:.2f} ({fmt.format(f * ref * scale)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def units_present(reports: dict[str, dict]) -> list[str]:
    """The cost units the first report has operating points in, MACs first (latency needs its table's hash)."""
    first = next(iter(reports.values()))
    return [u for u in UNIT_NAMES if operating_points(first, u, first.get("latency_table_sha256") or "")]


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """The (mean MACs, accuracy) points no other point beats on both, sorted by cost."""
    front, best = [], -1.0
    for macs, acc, _ in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((macs, acc))
            best = acc
    return front


class CompareError(ValueError):
    """Bad input to the comparison: a missing report, an unknown kind or label, no static reference."""


TRADEOFF_LEVELS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
"""Mean-MACs levels of the trade-off JSON, as fractions of the static reference's MACs."""


def parse_reports(items: list[str]) -> dict[str, list[str]]:
    """``label=path[+path...]`` items -> {label: [report paths, one per seed]}, every file checked to exist
    (a path that exists as given is one report even if its name holds a ``+``)."""
    if not items:
        raise CompareError("--reports is empty: give label=path/to/report.json[+more seeds], ...")
    out: dict[str, list[str]] = {}
    for item in items:
        label, _, spec = item.partition("=")
        if not label or not spec:
            raise CompareError(f"--reports item {item!r}: expected label=path/to/report.json[+path...]")
        if label in out:
            raise CompareError(f"--reports: label {label!r} given twice (join seeds of one model with +)")
        paths = [spec] if os.path.isfile(spec) else spec.split("+")
        for path in paths:
            if not path or not os.path.isfile(path):
                raise CompareError(f"--reports {label}: report {path!r} not found")
        out[label] = paths
    return out


def parse_kinds(items: list[str], labels: list[str]) -> dict[str, str]:
    """``label=kind`` items -> {label: kind}, labels of ``labels`` and kinds of ``KINDS`` only."""
    kinds = {}
    for item in items:
        label, _, kind = item.partition("=")
        if label not in labels:
            raise CompareError(f"--kinds {item!r}: {label!r} is not a label of --reports ({', '.join(labels)})")
        if kind not in KINDS:
            raise CompareError(f"--kinds {item!r}: unknown kind {kind!r}; one of {', '.join(KINDS)}")
        kinds[label] = kind
    return kinds


def report_kind(rep: dict) -> str:
    """``ddi``, ``exits_only``, ``layer_only`` or ``static`` from a report's model config (ungated without exits:
    static; ungated with exits: exits_only; gated with G = 1: layer_only; other gated: ddi). Whether a static
    model is ``static_small`` depends on the static reference (``tradeoff``)."""
    m = rep.get("model")
    if not isinstance(m, dict) or "gate_type" not in m:
        raise CompareError("the report has no model config (gate_type); give its kind with --kinds")
    if m["gate_type"] == "none":
        return "exits_only" if m.get("exits") else "static"
    return "layer_only" if m.get("groups") == 1 else "ddi"


def model_macs(rep: dict) -> float:
    """Full-path MACs of a report's model (for a static model, its only operating point)."""
    macs = rep.get("full_macs", rep.get("backbone_macs"))
    if macs is None:
        raise CompareError("the report has neither full_macs nor backbone_macs")
    return float(macs)


def best_accuracy(rep: dict, kind: str, max_macs: float) -> float | None:
    """Best test accuracy among a report's operating points with mean MACs <= ``max_macs`` (a static model: its
    full-path point only), None when none is that cheap."""
    if kind in ("static", "static_small"):
        r = rep["exits_all_full"][-1]
        points = [(float(r["mean_macs"]), float(r["accuracy"]))]
    else:
        points = [(macs, acc) for macs, acc, _ in operating_points(rep)]
    ok = [acc for macs, acc in points if macs <= max_macs * (1 + 1e-9)]
    return max(ok) if ok else None


def _mean_or_none(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(sum(values) / len(values))


def _target_cost(rep: dict, path: str | None) -> float | None:
    """``train.target_cost`` of the run: from the report when it carries its training config, else from the
    ``config.json`` next to the report; None when neither has it."""
    train = rep.get("train")
    if not isinstance(train, dict) and path:
        cfg_path = rundir.beside(path, rundir.CONFIG)
        if os.path.isfile(cfg_path):
            with open(cfg_path) as f:
                train = json.load(f).get("train")
    t = train.get("target_cost") if isinstance(train, dict) else None
    return None if t is None else float(t)


class Tradeoff(NamedTuple):
    """``tradeoff``'s answer.

    Args:
      json: the JSON contract (``--json``).
      per_seed: {label: {"best_accuracy": [[each seed's] per level], "learned_cost_ratio": [each seed's]}}.
      static: label of the static reference.
    """

    json: dict
    per_seed: dict[str, dict[str, list]]
    static: str


def tradeoff(runs: dict[str, list[dict]], kinds: dict[str, str] | None = None, static: str | None = None,
             paths: dict[str, list[str]] | None = None, levels: tuple[float, ...] = TRADEOFF_LEVELS) -> Tradeoff:
    """The trade-off of every model at each level of the static reference's MACs.

    Args:
      runs: {label: [report of each seed]}.
      kinds: {label: kind} that override the kind read from the reports (``report_kind``); an inferred static
        model is ``static_small`` when its MACs are below the reference's.
      static: label of the static reference; default the static model (by kind) with the most MACs.
      paths: {label: [report path of each seed]}, to read ``target_cost`` from the ``config.json`` beside each
        report (gated models only).
      levels: fractions of the reference's MACs.

    Returns the JSON contract ``{"levels", "static_macs", "models": {label: {"kind", "seeds", "best_accuracy",
    "learned_cost_ratio", "target_cost"}}}`` (accuracies as fractions; ``best_accuracy`` the mean over seeds at
    each level, None where a seed has no point that cheap; ``learned_cost_ratio`` the mean over seeds of the
    reports' ``learned_cost.mean_ratio``, None unless every seed has one), each seed's values and the reference.
    """
    kinds = dict(kinds or {})
    paths = paths or {}
    if not runs:
        raise CompareError("no reports to compare")
    base, macs = {}, {}
    for label, reps in runs.items():
        if not reps:
            raise CompareError(f"{label}: no reports")
        seed_macs = {model_macs(r) for r in reps}
        if len(seed_macs) > 1:
            raise CompareError(f"{label}: its seeds have different full MACs {sorted(seed_macs)}: not one model")
        macs[label] = seed_macs.pop()
        if label in kinds:
            base[label] = kinds[label]
            continue
        seed_kinds = set()
        for r in reps:
            try:
                seed_kinds.add(report_kind(r))
            except CompareError as e:
                raise CompareError(f"{label}: {e}") from None
        if len(seed_kinds) > 1:
            raise CompareError(f"{label}: its seeds are different kinds of model {sorted(seed_kinds)}")
        base[label] = seed_kinds.pop()
    statics = [label for label, k in base.items() if k in ("static", "static_small")]
    if static is None:
        if not statics:
            raise CompareError("no static model among the reports: add one (a static reference) or name it with "
                               "--static")
        static = max(statics, key=lambda label: macs[label])
    elif static not in runs:
        raise CompareError(f"--static={static!r} is not a label of --reports ({', '.join(runs)})")
    elif base[static] not in ("static", "static_small"):
        raise CompareError(f"--static={static!r} is a {base[static]} model, not a static one")
    ref = macs[static]
    for label in statics:
        if label not in kinds:
            base[label] = "static_small" if macs[label] < ref else "static"
    models, per_seed = {}, {}
    for label, reps in runs.items():
        kind = base[label]
        acc = [[best_accuracy(r, kind, f * ref) for r in reps] for f in levels]
        lc = [(r.get("learned_cost") or {}).get("mean_ratio") for r in reps]
        gated = kind in ("ddi", "layer_only")
        targets = [_target_cost(r, p) for r, p in zip(reps, paths.get(label, [None] * len(reps)), strict=True)]
        if gated and len({t for t in targets if t is not None}) > 1:
            raise CompareError(f"{label}: its seeds were trained to different target costs {targets}")
        models[label] = {"kind": kind, "seeds": len(reps), "best_accuracy": [_mean_or_none(a) for a in acc],
                         "learned_cost_ratio": _mean_or_none(lc),
                         "target_cost": targets[0] if gated and None not in targets else None}
        per_seed[label] = {"best_accuracy": acc, "learned_cost_ratio": lc}
    return Tradeoff({"levels": list(levels), "static_macs": ref, "models": models}, per_seed, static)


def tradeoff_markdown(t: Tradeoff) -> str:
    """The trade-off as a Markdown table: a row per model, mean over seeds with each seed's value in brackets."""
    result, per_seed, static = t
    ref = result["static_macs"]

    def cell(mean: float | None, seeds: list[float | None], pct: bool) -> str:
        f = (lambda v: "-" if v is None else f"{100 * v:.2f}") if pct else (lambda v: "-" if v is None else f"{v:.3f}")
        return f(mean) + (f" ({', '.join(f(v) for v in seeds)})" if len(seeds) > 1 else "")

    lines = [f"Best float test accuracy (%) at mean MACs <= level x the static reference ({static}, "
             f"{ref / 1e6:.2f}M MACs): mean over seeds, each seed in brackets; "
             "-: no operating point that cheap (in at least one seed). Learned cost: mean learned-path cost / full "
             "cost.", "",
             "| model | kind | seeds | " + " | ".join(f"<= {f:.2f} ({f * ref / 1e6:.1f}M)" for f in result["levels"])
             + " | learned cost | target cost |",
             "|---|---|---|" + "---|" * (len(result["levels"]) + 2)]
    for label, m in result["models"].items():
        s = per_seed[label]
        accs = [cell(a, seeds, True) for a, seeds in zip(m["best_accuracy"], s["best_accuracy"], strict=True)]
        lines.append(f"| {label} | {m['kind']} | {m['seeds']} | " + " | ".join(accs) + " | "
                     + cell(m["learned_cost_ratio"], s["learned_cost_ratio"], False) + " | "
                     + ("-" if m["target_cost"] is None else f"{m['target_cost']:.2f}") + " |")
    return "\n".join(lines) + "\n"


