"""Checks a ddi_tf export for microcontrollers: real TFLM kernels, driven by the C decision core.

    python micro/verify.py --model_dir=D --data=test.npz [--limit=N] [--budget_macs=B | --budget_uj=E]
        [--threshold=T] [--generated=DIR] [--json [PATH]]

The pieces run under the TFLM Python interpreter (PyPI ``tflite-micro``: the TFLM reference kernels), each
option in an arena of the generated shared size, in the order ``micro/ddi_sched.c`` decides (compiled into
``micro/build/libddi_sched.so`` and loaded with ctypes; built with ``make -C micro lib`` when missing). The
same C core drives LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``, no XNNPACK) on the same
images; the Python scheduler (``tflite/ddi_runtime``) is run too, on the same LiteRT interpreters, to check
that the C decisions mirror it exactly. Reports accuracy, agreement, budget overruns, arena and flash
bytes, fit on a few boards, and ``missing_ops``: ops a piece uses that the generated resolver
(``ddi_ops.h``) does not register. Exit status 1 when an op is missing or a sample went over budget.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

_MICRO = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_MICRO, os.path.join(os.path.dirname(_MICRO), "tflite")]  # ddi_micro; ddi_runtime uninstalled

from ddi_micro import gen  # noqa: E402
from ddi_micro.verify import verify  # noqa: E402


def _budget_value(text: str) -> float:
    """argparse type of the budget flags: a positive number, or ``inf`` for no budget (NaN, 0, < 0 refused)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a budget: give a positive number (inf: no budget)")
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--data", required=True, help=".npz with x (N, 32, 32, 3) uint8 and y")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--budget_macs", type=_budget_value, default=None,
                    help="hard per-sample budget in MACs; positive, or inf: no budget (the default)")
    ap.add_argument("--budget_uj", type=_budget_value, default=None,
                    help="hard per-sample budget in microjoules; positive, or inf: no budget")
    ap.add_argument("--threshold", type=float, default=None, help="early-exit threshold for every exit")
    ap.add_argument("--generated", default=None, help="generated dir (default: generate into a temp dir)")
    ap.add_argument("--defer_exits", action="store_true",
                    help="deferred exits (ddi_set_defer_exits; ddi_runtime --defer_exits): one more boundary buffer")
    ap.add_argument("--json", nargs="?", const="-", default=None, help="write the JSON report to PATH (or stdout)")
    args = ap.parse_args(argv)
    if args.budget_macs is not None and args.budget_uj is not None:
        ap.error("give --budget_macs or --budget_uj, not both")
    kind, budget = ("uj", args.budget_uj) if args.budget_uj is not None else ("macs", args.budget_macs)
    try:
        res = verify(args.model_dir, args.data, args.limit, math.inf if budget is None else budget, kind,
                     args.threshold, args.generated, args.defer_exits)
    except (gen.GenError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(res, indent=1)
    if args.json in (None, "-"):
        print(text)
    else:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    for key, ops in res["missing_ops"].items():
        print(f"error: piece {key} uses op(s) {', '.join(ops)} that the generated resolver (ddi_ops.h) lacks",
              file=sys.stderr)
    if res["over_budget"]:
        print(f"error: {res['over_budget']} runs went over the budget", file=sys.stderr)
    if args.json not in (None, "-"):
        print(f"accuracy {res['accuracy']:.4f}, agreement_with_litert {res['agreement_with_litert']:.4f}, "
              f"over_budget {res['over_budget']}, arena max {res['arena_bytes']['max']} B, "
              f"flash {res['flash_bytes']} B -> {args.json}")
    return 1 if res["missing_ops"] or res["over_budget"] else 0


if __name__ == "__main__":
    sys.exit(main())
