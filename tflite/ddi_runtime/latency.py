"""The latency table (``latency.json``, written by ``python -m ddi_runtime profile``), its one owner.

``{"unit": "ms", "interpreter", "delegate", "repeats", "pieces": {piece: {option: median ms}}}``: per piece option,
the median milliseconds measured on the device. The scheduler reads it for latency budgets, ``ddi_tf`` for
latency-cost training (``--cost=latency``) and ``micro/gen.py`` for the planned latencies of the C table.
"""

from __future__ import annotations

import json
import math
import os

from ddi_runtime.manifest import ModelError


def read_latency_pieces(path: str) -> dict[str, dict[str, float]]:
    """``{piece: {option: ms}}`` of a latency table; ModelError when the file is missing, not such a table, or
    holds a latency that is not a finite number >= 0."""
    if not os.path.exists(path):
        raise ModelError(f"latency table {path} does not exist: run `python -m ddi_runtime profile --model_dir=D`")
    try:
        with open(path) as f:
            pieces = json.load(f)["pieces"]
        if not isinstance(pieces, dict) or not all(isinstance(v, dict) for v in pieces.values()):
            raise TypeError("'pieces' must map piece names to {option: ms}")
        table = {p: {o: float(ms) for o, ms in opts.items()} for p, opts in pieces.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"latency table {path} is not a valid JSON table with a 'pieces' object: {e}") from e
    for p, opts in table.items():
        bad = {o: ms for o, ms in opts.items() if not math.isfinite(ms) or ms < 0}
        if bad:
            raise ModelError(f"latency table {path}: piece {p!r} has invalid latencies {bad}")
    return table


def write_latency_table(path: str, table: dict) -> None:
    """Writes a profile's table atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(table, f, indent=2)
    os.replace(tmp, path)


def load_latency_table(path: str, manifest: dict) -> dict[tuple[str, str], float]:
    """(piece, option) -> measured milliseconds for every piece option of ``manifest``'s export."""
    table = read_latency_pieces(path)
    out = {}
    for p in manifest["pieces"]:
        names = [o["name"] for o in p["options"]]
        if isinstance(table.get(p["name"]), dict) and set(table[p["name"]]) != set(names):
            raise ModelError(f"latency table {path} has options {sorted(table[p['name']])} for {p['name']}, the "
                             f"export has {names}: it was measured for another export; profile this one")
        for o in p["options"]:
            try:
                out[(p["name"], o["name"])] = table[p["name"]][o["name"]]
            except KeyError as e:
                raise ModelError(f"latency table {path} lacks {p['name']}/{o['name']}: {e}") from e
    return out
