"""Generates the C sources of a ddi_tf export for TensorFlow Lite Micro.

    python micro/gen.py --model_dir=D --out=micro/generated/<name> [--arena_margin=4096]
        [--latency_table=latency.json --latency_margin=0.1] [--check_roundtrip]

Writes into ``--out`` (every file says it is generated; never edit them by hand):

- ``<piece>__<option>_model.cc/.h``: each non-identity option's ``.tflite`` as a 16-byte-aligned
  ``const unsigned char`` array (C linkage, so the C table can point at it);
- ``ddi_model_table.h/.c``: the piece table for ``ddi_sched.h`` (order, kind, options with identity flag,
  model pointer/length, MACs, energy, planned latency, output quantisation, boundary edges), the exported
  reserves, the named exit thresholds, the arena measured for every option with the TFLM interpreter and
  the shared arena size (maximum + margin);
- ``ddi_ops.h``: the X-macro list of the ops the pieces use, with their ``MicroMutableOpResolver`` methods;
- ``generated.json``: the same numbers for tools (``micro/verify.py``).

``--check_roundtrip`` parses the generated arrays back and checks they hold exactly the ``.tflite`` bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_MICRO = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_MICRO, os.path.join(os.path.dirname(_MICRO), "tflite")]  # ddi_micro; ddi_runtime uninstalled

from ddi_micro.gen import GenError, check_roundtrip, generate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_dir", required=True, help="export directory (python -m ddi_tf.export)")
    ap.add_argument("--out", required=True, help="output directory, e.g. micro/generated/<name>")
    ap.add_argument("--arena_margin", type=int, default=4096,
                    help="bytes added to the largest measured arena (kernel scratch on optimised kernels)")
    ap.add_argument("--latency_table", default=None, help="latency.json (ms) from `ddi_runtime profile`")
    ap.add_argument("--latency_margin", type=float, default=0.1)
    ap.add_argument("--check_roundtrip", action="store_true", help="check the arrays equal the .tflite files")
    args = ap.parse_args(argv)
    try:
        t = generate(args.model_dir, args.out, args.arena_margin, args.latency_table, args.latency_margin)
        problems = check_roundtrip(args.model_dir, args.out) if args.check_roundtrip else []
    except GenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    unsupported = [op for op, v in t["ops"].items() if not v["method"]]
    summary = {"out": args.out, "pieces": len(t["pieces"]), "flash_bytes": t["flash_bytes"],
               "arena_bytes": {o["key"]: o["arena_bytes"] for p in t["pieces"] for o in p["options"]
                               if not o["identity"]},
               "arena_max_measured": t["arena_max_measured"], "arena_shared": t["arena_bytes"],
               "max_boundary_bytes": t["max_boundary_bytes"], "ops": list(t["ops"]),
               "unsupported_ops": unsupported}
    if args.check_roundtrip:
        summary["roundtrip"] = problems if problems else "ok"
    print(json.dumps(summary, indent=1))
    for op in unsupported:
        print(f"warning: op {op} has no known MicroMutableOpResolver method; add it to RESOLVER_METHODS",
              file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
