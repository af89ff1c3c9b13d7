"""The latency table (``latency.json``, written by ``python -m ddi_runtime profile``): per piece option, the median
milliseconds measured on the device; read here for latency budgets (and by ddi_tf for latency-cost training)."""

from __future__ import annotations

import json
import os

from ddi_runtime.manifest import ModelError


def load_latency_table(path: str, manifest: dict) -> dict[tuple[str, str], float]:
    """(piece, option) -> measured milliseconds, from ``profile``'s latency.json; every piece must be there."""
    if not os.path.exists(path):
        raise ModelError(f"latency table {path} does not exist: run `python -m ddi_runtime profile --model_dir=D`")
    with open(path) as f:
        table = json.load(f)["pieces"]
    out = {}
    for p in manifest["pieces"]:
        names = [o["name"] for o in p["options"]]
        if isinstance(table.get(p["name"]), dict) and set(table[p["name"]]) != set(names):
            raise ModelError(f"latency table {path} has options {sorted(table[p['name']])} for {p['name']}, the "
                             f"export has {names}: it was measured for another export; profile this one")
        for o in p["options"]:
            try:
                out[(p["name"], o["name"])] = float(table[p["name"]][o["name"]])
            except (KeyError, TypeError, ValueError) as e:
                raise ModelError(f"latency table {path} lacks {p['name']}/{o['name']}: {e}") from e
    return out
