"""Checks a ddi_tf export for microcontrollers: real TFLM kernels, driven by the C decision core.

    python micro/verify.py --model_dir=D --data=test.npz [--limit=N]
        [--budget_macs=B | --budget_uj=E | --budget_us=T --latency_table=L [--latency_margin=0.1]]
        [--threshold=T] [--generated=DIR] [--defer_exits] [--json [PATH]]
    python micro/verify.py --model_dir=D --profile [--repeats=20] [--out=D/latency_tflm.json] [--generated=DIR]

The pieces run under the TFLM Python interpreter (PyPI ``tflite-micro``: the TFLM reference kernels), each
option in an arena of the generated shared size, in the order ``micro/ddi_sched.c`` decides (compiled into
``micro/build/libddi_sched.so`` and loaded with ctypes; built with ``make -C micro lib`` when missing). The
same C core drives LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``, no XNNPACK) on the same
images; the Python scheduler (``tflite/ddi_runtime``) is run too, on the same LiteRT interpreters, to check
that the C decisions mirror it exactly. Reports accuracy, agreement, budget overruns, arena and flash
bytes, fit on a few boards, and ``missing_ops``: ops a piece uses that the generated resolver
(``ddi_ops.h``) does not register. Exit status 1 when an op is missing or a sample went over budget.

``--profile`` times every piece option on the TFLM interpreter instead (round robin, 2 warm-up rounds, the median
of ``--repeats``) and writes a latency table in the format of ``python -m ddi_runtime profile``; ``--budget_us``
budgets with it (``--latency_table``), in the C core's microseconds (DDI_COST_LATENCY_US). Host timings of the
reference kernels: their ratios, not their absolute values, carry over to a Cortex-M.
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
from ddi_micro.verify import profile, verify  # noqa: E402

from ddi_runtime.latency import write_latency_table  # noqa: E402


def _budget_value(text: str) -> float:
    """argparse type of the budget flags: a positive number, or ``inf`` for no budget (NaN, 0, < 0 refused)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a budget: give a positive number (inf: no budget)")
    return value


def _profile(ap: argparse.ArgumentParser, args) -> int:
    """--profile: the latency table of the pieces on the TFLM interpreter, one line per option (slowest first)."""
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    path = args.out or os.path.join(args.model_dir, "latency_tflm.json")
    try:
        table = profile(args.model_dir, args.repeats, generated=args.generated)
        write_latency_table(path, table)
    except (gen.GenError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [(ms, f"{piece}/{option}") for piece, opts in table["pieces"].items() for option, ms in opts.items()]
    width = max(len(name) for _, name in rows)
    for ms, name in sorted(rows, key=lambda r: (-r[0], r[1])):
        print(f"{name:<{width}}  {ms:10.4f} ms")
    print(f"wrote {path} (TFLM reference kernels on this host, median of {args.repeats}: use the ratios)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--data", default=None, help=".npz with x (N, 32, 32, 3) uint8 and y (required unless --profile)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--budget_macs", type=_budget_value, default=None,
                    help="hard per-sample budget in MACs; positive, or inf: no budget (the default)")
    ap.add_argument("--budget_uj", type=_budget_value, default=None,
                    help="hard per-sample budget in microjoules; positive, or inf: no budget")
    ap.add_argument("--budget_us", type=_budget_value, default=None,
                    help="hard per-sample budget in microseconds (DDI_COST_LATENCY_US, needs --latency_table); "
                         "positive, or inf: no budget")
    ap.add_argument("--latency_table", default=None,
                    help="latency table for --budget_us (e.g. from --profile: model_dir/latency_tflm.json)")
    ap.add_argument("--latency_margin", type=float, default=0.1,
                    help="planned latency = measured x (1 + margin) (default 0.1)")
    ap.add_argument("--threshold", type=float, default=None, help="early-exit threshold for every exit")
    ap.add_argument("--generated", default=None, help="generated dir (default: generate into a temp dir)")
    ap.add_argument("--defer_exits", action="store_true",
                    help="deferred exits (ddi_set_defer_exits; ddi_runtime --defer_exits): one more boundary buffer")
    ap.add_argument("--json", nargs="?", const="-", default=None, help="write the JSON report to PATH (or stdout)")
    ap.add_argument("--profile", action="store_true",
                    help="time every piece option on the TFLM interpreter, write the latency table and exit")
    ap.add_argument("--repeats", type=int, default=20, help="--profile: timed rounds over every option (default 20)")
    ap.add_argument("--out", default=None, help="--profile: where the table goes (default model_dir/latency_tflm.json)")
    args = ap.parse_args(argv)
    if args.profile:
        return _profile(ap, args)
    if args.data is None:
        ap.error("the following arguments are required: --data (unless --profile)")
    given = [f"--budget_{k}" for k in ("macs", "uj", "us") if getattr(args, f"budget_{k}") is not None]
    if len(given) > 1:
        ap.error(f"give one budget, not {' and '.join(given)}")
    if args.budget_us is not None and args.latency_table is None:
        ap.error("--budget_us needs --latency_table (profile the pieces first: python micro/verify.py --profile "
                 f"--model_dir={args.model_dir}, which writes {os.path.join(args.model_dir, 'latency_tflm.json')})")
    if args.budget_us is not None:
        kind, budget = "us", args.budget_us
    else:
        kind, budget = ("uj", args.budget_uj) if args.budget_uj is not None else ("macs", args.budget_macs)
    try:
        res = verify(args.model_dir, args.data, args.limit, math.inf if budget is None else budget, kind,
                     args.threshold, args.generated, args.defer_exits, args.latency_table, args.latency_margin)
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
