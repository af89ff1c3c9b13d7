"""The cost table of the configured model: ``python -m ddi_tf.summary --flagfile=F [--depth=N] [--json]``.

Uses the training command's own model flags, so any flag overrides the flagfile. Counts are exact MACs of
conv and dense layers (see ``ddi_tf.core.arch`` for the conventions), deployed parameters, and energy under the
documented model (``ddi_tf.core.costs``).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

import ddi_tf  # noqa: F401
from ddi_tf import flags as ddi_flags

ddi_flags.define_flags()
flags.DEFINE_boolean("json", False, "Print JSON instead of a table.")
FLAGS = flags.FLAGS


def summarize(cfg) -> dict:
    """The cost summary of a ModelConfig as a JSON-serialisable dict."""
    from ddi_tf.core.arch import backbone_macs, build_pieces, full_macs
    from ddi_tf.core.costs import cost_table
    from ddi_tf.model.build import build_model

    pieces = build_pieces(cfg)
    e8, e32 = cost_table(pieces, "energy", "int8"), cost_table(pieces, "energy", "float32")
    model = build_model(cfg)
    exits, blocks, other, cum = [], [], [], 0
    for i, p in enumerate(pieces):
        cum += p.options[-1].macs
        if p.kind == "exit":
            exits.append({"name": p.name, "position": cfg.exit_positions[p.index], "macs": p.options[0].macs,
                          "cumulative_full_macs": cum})
        elif p.kind == "block":
            blocks.append({"name": p.name, "in_shape": list(p.in_shape), "out_shape": list(p.out_shape),
                           "options": [{"name": o.name, "macs": o.macs, "params": o.params,
                                        "energy_uj_int8": e8.costs[i][k], "energy_uj_float32": e32.costs[i][k]}
                                       for k, o in enumerate(p.options)]})
        else:
            other.append({"name": p.name, "kind": p.kind, "macs": p.options[0].macs, "params": p.options[0].params})
    return {
        "backbone": cfg.backbone, "depth": cfg.depth, "num_classes": cfg.num_classes, "groups": cfg.groups,
        "gate_type": cfg.gate_type, "params": int(model.count_params()),
        "backbone_macs": backbone_macs(cfg), "full_macs": full_macs(pieces),
        "full_energy_uj_int8": e8.full_cost(), "full_energy_uj_float32": e32.full_cost(),
        "cheapest_answer_macs": cost_table(pieces, "macs").cheapest_answer(),
        "exits": exits, "blocks": blocks, "other_pieces": other,
        "conventions": "MACs: conv+dense multiply-accumulates (BN folded; adds/pooling not counted); "
                       "energy: Horowitz ISSCC 2014 45nm, see ddi_tf/costs.py",
    }


def _table(s: dict) -> str:
    lines = [f"{s['backbone']}-{s['depth']}  classes={s['num_classes']}  G={s['groups']}  gates={s['gate_type']}  "
             f"params={s['params']:,}",
             f"backbone MACs (static body): {s['backbone_macs'] / 1e6:.2f}M   full MACs (all gates, widths, exits): "
             f"{s['full_macs'] / 1e6:.2f}M   cheapest answer: {s['cheapest_answer_macs'] / 1e6:.3f}M",
             f"energy, full path: {s['full_energy_uj_int8']:.1f} uJ int8, {s['full_energy_uj_float32']:.1f} uJ float32",
             "", f"{'block':<10}{'in':>12}{'out':>12}  options (MMACs)"]
    for b in s["blocks"]:
        opts = "  ".join(f"{o['name']}={o['macs'] / 1e6:.3f}" for o in b["options"])
        lines.append(f"{b['name']:<10}{'x'.join(map(str, b['in_shape'])):>12}{'x'.join(map(str, b['out_shape'])):>12}"
                     f"  {opts}")
    lines += ["", f"{'exit':<10}{'after block':>12}{'head MMACs':>12}{'cumulative full MMACs':>24}"]
    for e in s["exits"]:
        cum = e["cumulative_full_macs"] / 1e6
        lines.append(f"{e['name']:<10}{e['position']:>12}{e['macs'] / 1e6:>12.3f}{cum:>24.3f}")
    gates = [p for p in s["other_pieces"] if p["kind"] == "gate"]
    if gates:
        lines.append(f"\ngates: {len(gates)} x ~{gates[0]['macs']} MACs")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Prints the summary."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from ddi_tf.core.config import ConfigError

    try:
        s = summarize(ddi_flags.model_config_from_flags())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(s, indent=2) if FLAGS.json else _table(s))


if __name__ == "__main__":
    app.run(main)
