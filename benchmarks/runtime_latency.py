"""Real savings on the board runtime: the static int8 backbone against the DDI pieces at a sweep of budgets.

    python benchmarks/runtime_latency.py --ddi=exports/cifar_cpu --static=exports/cifar_cpu_static \
        --data=test.npz --limit=1000 --threads=1 --out=docs/results/runtime_latency

One run, batch 1, int8, the same interpreter and thread count for every configuration. The static baseline is
the static export (stem, every block, head) run by the same scheduler without a budget, so both pay the same
per-piece overhead. Each DDI configuration runs the scheduler (``ddi_runtime``) with a hard MAC budget
(``ddi@f``; with ``--defer_exits`` also ``defer@f``, the scheduler with exits deferred); every
image runs through all configurations back to back (the order rotating) so that machine noise hits all of them
alike. Reported per configuration:
accuracy, mean MACs, mean/p50 latency, the scheduler's own overhead (time outside ``invoke``), and the ratio of
the latency saving to the MACs saving against the static baseline (1.0 = skipped work is fully saved).
This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tflite"))

from ddi_runtime import Scheduler  # noqa: E402
from ddi_runtime.__main__ import load_npz  # noqa: E402
from ddi_runtime.interpreters import choose_backend  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ddi", required=True)
    ap.add_argument("--static", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--interpreter", default="litert")
    ap.add_argument("--delegate", default="default", help="default (XNNPACK on LiteRT) or none")
    ap.add_argument("--budget_fractions", default="0.2,0.3,0.4,0.5,0.6,0.8,1.0",
                    help="budgets as fractions of the static backbone's MACs")
    ap.add_argument("--threshold", type=float, default=None, help="early-exit confidence threshold (default: none)")
    ap.add_argument("--defer_exits", action="store_true",
                    help="also run every budget with exits deferred (ddi_runtime --defer_exits; configs defer@f)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--loop", default="auto", choices=["auto", "c", "python"],
                    help="the scheduler's per-sample loop (ddi_runtime.Scheduler(loop=...)); auto: C where built")
    ap.add_argument("--out", required=True, help="output prefix (.json and .png)")
    ap.add_argument("--contract", default=None,
                    help="also write the issue-14 benchmark contract here (docs/results/runtime_<delegate>.json): "
                         "per budget the latency/MACs saving ratio and the overhead of each round")
    args = ap.parse_args()

    x, y = load_npz(args.data, args.limit)
    backend = choose_backend(args.interpreter)
    static = Scheduler(args.static, args.interpreter, args.threads, args.delegate, loop=args.loop)
    static_macs = sum(max(c) for c in static.costs("macs")[0])
    sched = Scheduler(args.ddi, args.interpreter, args.threads, args.delegate, loop=args.loop)
    fractions = [float(v) for v in args.budget_fractions.split(",")]
    configs = ["static"] + [f"ddi@{f:g}" for f in fractions]
    if args.defer_exits:
        configs += [f"defer@{f:g}" for f in fractions]
    plan = sched.costs("macs")
    budgets = {c: float(c.split("@")[1]) * static_macs for c in configs if c != "static"}
    configs = [c for c in configs if c == "static" or budgets[c] >= sched.cheapest_answer("macs")]
    runs: dict[str, list] = {c: [] for c in configs}
    # Per image, every configuration back to back (rotating which goes first): machine noise is common to all
    # of them, so the ratios hold even when absolute times drift between rounds.
    for r in range(args.rounds):
        for n, img in enumerate(x):
            k = (n + r) % len(configs)
            for c in configs[k:] + configs[:k]:
                runs[c].append(static.run(img) if c == "static" else
                               sched.run(img, budgets[c], "macs", args.threshold, plan, c.startswith("defer@")))
    lat: dict[str, list[np.ndarray]] = {c: [np.array([q.latency_ms for q in runs[c]])] for c in configs}
    res: dict[str, dict] = {}
    for c in configs:
        rs = runs[c][: len(x)]  # predictions and MACs do not change between rounds
        invoke = sum(q.invoke_ms for q in runs[c])
        res[c] = {"accuracy": float((np.array([q.pred for q in rs]) == y).mean()),
                  "overhead": float(1 - invoke / lat[c][0].sum())}
        if c == "static":
            res[c]["mean_macs"] = static_macs
        else:
            res[c].update({"budget_macs": budgets[c], "mean_macs": float(np.mean([q.macs for q in rs])),
                           "max_macs": float(np.max([q.macs for q in rs])),
                           "over_budget": int(sum(q.cost > budgets[c] for q in rs))})
    base = float(np.mean([m.mean() for m in lat["static"]]))
    rows = []
    for c in configs:
        if c not in res:
            continue
        ms = np.concatenate(lat[c])
        r = {"config": c, **res[c], "mean_latency_ms": float(ms.mean()), "p50_latency_ms": float(np.median(ms))}
        mac_saving = 1 - r["mean_macs"] / static_macs
        lat_saving = 1 - r["mean_latency_ms"] / base
        r["macs_saving"], r["latency_saving"] = mac_saving, lat_saving
        r["latency_over_macs_saving"] = lat_saving / mac_saving if mac_saving > 0.02 else None
        rows.append(r)
    out = {"examples": int(len(x)), "interpreter": backend, "delegate": args.delegate, "threads": args.threads,
           "loop": sched.loop, "static_macs": static_macs, "rows": rows}
    if args.contract:
        contract = _contract(args, sched.loop, runs, res, static_macs, len(x))
        Path(args.contract).write_text(json.dumps(contract, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    d = [r for r in rows if r["config"].startswith("ddi@")]
    deferred = [r for r in rows if r["config"].startswith("defer@")]
    s = next(r for r in rows if r["config"] == "static")
    a1.plot([r["mean_macs"] / 1e6 for r in d], [r["mean_latency_ms"] for r in d], "o-", label="DDI pieces")
    if deferred:
        a1.plot([r["mean_macs"] / 1e6 for r in deferred], [r["mean_latency_ms"] for r in deferred], "^-",
                label="DDI pieces, exits deferred")
    a1.plot([s["mean_macs"] / 1e6], [s["mean_latency_ms"]], "s", label="static int8 backbone")
    a1.plot([0, s["mean_macs"] / 1e6], [0, s["mean_latency_ms"]], ":", color="gray",
            label="latency proportional to MACs")
    a1.set_xlabel("mean MACs (millions)")
    a1.set_ylabel(f"mean latency per image (ms, {backend}, {args.threads} thread)")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.plot([r["mean_macs"] / 1e6 for r in d], [100 * r["accuracy"] for r in d], "o-", label="DDI pieces (budgets)")
    if deferred:
        a2.plot([r["mean_macs"] / 1e6 for r in deferred], [100 * r["accuracy"] for r in deferred], "^-",
                label="exits deferred")
    a2.plot([s["mean_macs"] / 1e6], [100 * s["accuracy"]], "s", label="static int8 backbone")
    a2.set_xlabel("mean MACs (millions)")
    a2.set_ylabel("accuracy (%)")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=110)


def _contract(args, loop: str, runs: dict[str, list], res: dict[str, dict], static_macs: float, n: int) -> dict:
    """The issue-14 contract: for each budget (``defer@f`` with --defer_exits, else ``ddi@f``) and each round,
    ratio = latency saving / MACs saving against the static network in the same round, overhead = time outside
    ``invoke`` / total."""

    def per_round(c: str) -> list[tuple[float, float]]:
        out = []
        for r in range(args.rounds):
            rs = runs[c][r * n:(r + 1) * n]
            ms, inv = np.array([q.latency_ms for q in rs]), np.array([q.invoke_ms for q in rs])
            out.append((float(ms.mean()), float(1 - inv.sum() / ms.sum())))
        return out

    base = per_round("static")
    budgets = []
    rule = "defer@" if args.defer_exits else "ddi@"  # with --defer_exits, the deployment setting is reported
    for c in (c for c in runs if c.startswith(rule)):
        mac_saving = 1 - res[c]["mean_macs"] / static_macs
        rounds = per_round(c)
        budgets.append({"fraction": float(c.split("@")[1]),
                        "ratio": [(1 - ms / b[0]) / mac_saving if mac_saving > 0.02 else None
                                  for (ms, _), b in zip(rounds, base, strict=True)],
                        "overhead": [o for _, o in rounds], "accuracy": res[c]["accuracy"],
                        "over_budget": res[c]["over_budget"], "mean_macs": res[c]["mean_macs"]})
    return {"delegate": "xnnpack" if args.delegate == "default" else "none", "loop": loop,
            "model": os.path.basename(os.path.normpath(args.ddi)),
            "static": os.path.basename(os.path.normpath(args.static)),
            "exits": "deferred" if args.defer_exits else "every", "examples": n, "threads": args.threads,
            "runs": args.rounds, "budgets": budgets,
            "static_overhead": [o for _, o in base]}


if __name__ == "__main__":
    main()
