"""Command line: ``python -m ddi_runtime {eval,classify,profile} --model_dir=D ...``.

    python -m ddi_runtime eval --model_dir=D --data=test.npz [--budget_macs=N | --budget_uj=E | --budget_ms=T]
        [--threshold T [T ...]] [--limit=N] [--json [PATH]]
    python -m ddi_runtime classify --model_dir=D image.png|image.npy [--budget_macs=N]
    python -m ddi_runtime profile --model_dir=D [--repeats=50] [--out=D/latency.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from ddi_runtime.data import load_npz
from ddi_runtime.interpreters import DELEGATES, RuntimeSetupError
from ddi_runtime.latency import write_latency_table
from ddi_runtime.manifest import ModelError
from ddi_runtime.scheduler import BudgetError, Scheduler, check_budget_value


def _budget_value(text: str) -> float:
    """argparse type of the budget flags: a positive number, or ``inf`` for no budget (NaN, 0, < 0 refused)."""
    try:
        return check_budget_value(text)
    except BudgetError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a budget: give a positive number (inf: no budget)") from e


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ddi_runtime", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model_dir", required=True, help="export directory (manifest.json + .tflite pieces)")
    common.add_argument("--interpreter", default="auto", help="auto, litert, tflite_runtime or tensorflow")
    common.add_argument("--threads", type=int, default=1, help="CPU threads per interpreter")
    common.add_argument("--delegate", default="default", choices=DELEGATES,
                        help="default CPU path (XNNPACK on LiteRT), none (builtin kernels), or edgetpu")
    common.add_argument("--loop", default="auto", choices=["auto", "c", "python"],
                        help="per-sample loop: auto (C where the extension was built), c, or python (the reference)")
    budget = argparse.ArgumentParser(add_help=False)
    group = budget.add_mutually_exclusive_group()
    none = "; positive, or inf: no budget (the default)"
    group.add_argument("--budget_macs", type=_budget_value, help="hard per-sample budget in MACs" + none)
    group.add_argument("--budget_uj", type=_budget_value,
                       help="hard per-sample budget in microjoules (energy model)" + none)
    group.add_argument("--budget_ms", type=_budget_value,
                       help="hard per-sample budget in milliseconds (latency table)" + none)
    budget.add_argument("--threshold", type=float, nargs="+", default=None,
                        help="confidence threshold(s) for early exits (one for all exits, or one per exit)")
    budget.add_argument("--defer_exits", action="store_true",
                        help="run an exit only if the sample stops before the next one (no threshold can stop there); "
                             "while one is deferred, a block the budget would skip stops the sample instead")
    budget.add_argument("--latency_table", default=None, help="latency.json (default: model_dir/latency.json)")
    budget.add_argument("--latency_margin", type=float, default=0.1, help="planned latency = measured x (1+margin)")
    ev = sub.add_parser("eval", parents=[common, budget], help="accuracy and cost over a .npz data set")
    ev.add_argument("--data", required=True,
                    help=".npz with x (N,32,32,3) uint8 and y (N,) class indices 0..num_classes-1")
    ev.add_argument("--limit", type=int, default=0, help="at most this many samples (0: all)")
    ev.add_argument("--json", nargs="?", const="-", default=None, help="write one JSON object (to PATH or stdout)")
    cl = sub.add_parser("classify", parents=[common, budget], help="classify single images (.npy, .png, .jpg)")
    cl.add_argument("images", nargs="+")
    pr = sub.add_parser("profile", parents=[common], help="measure every piece's latency on this device")
    pr.add_argument("--repeats", type=int, default=50)
    pr.add_argument("--out", default=None, help="where to write latency.json (default: model_dir/latency.json)")
    return ap


def _budget(args) -> tuple[str, float]:
    for kind in ("macs", "uj", "ms"):
        value = getattr(args, f"budget_{kind}")
        if value is not None:
            return kind, value
    return "macs", math.inf


def load_image(path: str) -> np.ndarray:
    """A (32, 32, 3) uint8 image from .npy, or from PNG/JPEG when Pillow is installed."""
    if path.endswith(".npy"):
        img = np.load(path)
    else:
        try:
            from PIL import Image
        except ImportError as e:
            raise ModelError(f"reading {path} needs Pillow (pip install pillow), or pass a .npy") from e
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    if img.shape != (32, 32, 3) or img.dtype != np.uint8:
        raise ModelError(f"{path}: expected a 32x32 RGB uint8 image, got {img.dtype} {img.shape}")
    return img


def evaluate(sched: Scheduler, x: np.ndarray, y: np.ndarray, kind: str, budget: float, thresholds,
             defer_exits: bool = False) -> dict:
    """Runs every sample and summarises accuracy, cost, budget violations and latency (``inf``: no budget)."""
    sched.check_budget(kind, budget)
    plan = sched.costs(kind)
    results = [sched.run(img, budget, kind, thresholds, plan, defer_exits) for img in x]
    pred = np.array([r.pred for r in results])
    cost = np.array([r.cost for r in results])
    lat = np.array([r.latency_ms for r in results])
    invoke = np.array([r.invoke_ms for r in results])
    macs = np.array([r.macs for r in results])
    out = {
        "examples": int(len(x)), "accuracy": float((pred == y).mean()) if len(x) else 0.0,
        "mean_macs": float(macs.mean()), "max_macs": float(macs.max()),
        f"budget_{kind}": None if not math.isfinite(budget) else budget,
        f"mean_{kind}": float(cost.mean()), f"max_{kind}": float(cost.max()),
        "over_budget": int((cost > budget).sum()),
        "latency_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                       "p99": float(np.percentile(lat, 99))},
        "scheduler_overhead": float(1.0 - invoke.sum() / max(lat.sum(), 1e-12)),
        "exit_histogram": np.bincount([r.exit for r in results if r.exit >= 0],
                                      minlength=sched.num_exits).tolist(),
        "interpreter": sched.backend, "delegate": sched.delegate, "thresholds": thresholds,
        "defer_exits": defer_exits, "loop": sched.loop,
    }
    if kind == "ms":
        out["deadline_misses"] = int((lat > budget).sum())
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        latency_table = getattr(args, "latency_table", None)
        sched = Scheduler(args.model_dir, args.interpreter, args.threads, args.delegate, latency_table,
                          getattr(args, "latency_margin", 0.1), loop=args.loop)
        if args.command == "profile":
            table = sched.profile(args.repeats)
            path = args.out or os.path.join(args.model_dir, "latency.json")
            write_latency_table(path, table)
            print(f"wrote {path}")
            return 0
        kind, budget = _budget(args)
        if args.command == "classify":
            sched.check_budget(kind, budget)
            names = sched.manifest.get("class_names") or []
            for path in args.images:
                r = sched.run(load_image(path), budget, kind, args.threshold,
                              defer_exits=args.defer_exits)
                label = names[r.pred] if 0 <= r.pred < len(names) else str(r.pred)
                print(json.dumps({"image": path, "class": label, "index": r.pred, "exit": r.exit,
                                  f"cost_{kind}": r.cost, "latency_ms": r.latency_ms}))
            return 0
        x, y = load_npz(args.data, args.limit, int(sched.manifest["num_classes"]))
        result = evaluate(sched, x, y, kind, budget, args.threshold, args.defer_exits)
        if args.json == "-":
            print(json.dumps(result, indent=2))
        else:
            limit = "no budget" if math.isinf(budget) else f"budget {budget:g} {kind}"
            print(f"{result['examples']} examples  {limit}  accuracy {result['accuracy']:.4f}  "
                  f"mean MACs {result['mean_macs']:.4g}  max MACs {result['max_macs']:.4g}  "
                  f"over budget {result['over_budget']}  latency p50 {result['latency_ms']['p50']:.3f} ms  "
                  f"({result['interpreter']}, {result['loop']} loop)")
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(result, f, indent=2)
        return 0
    except (ModelError, BudgetError, RuntimeSetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
