"""Parity between the Keras model and the exported int8 pieces, run in order by a minimal reference loop.

    python -m ddi_tf.parity --workdir=W --model_dir=D [--limit=1000] [--budget_fractions=...] [--json=out.json]

The loop runs the pieces of ``D/stages`` with LiteRT's reference kernels (no XNNPACK), following each gate's
argmax, computing every exit (no early exit, no budget), and compares the gate decisions and every exit's
argmax with the Keras model's on the same images (the test split of the run's data set); then compares
float and int8 accuracy under the same hard budgets (the DDI budget rule run on the int8 pieces).
"""

from __future__ import annotations

import json
import os

import numpy as np


def _interpreter(path: str, reference: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=path, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    return interp


class ReferenceLoop:
    """Runs the exported pieces for one image at a time with the DDI policy, in plain Python.

    Without a budget or thresholds it computes every exit and follows every gate (for parity); with them it
    applies the reservation rule of ``ddi_tf.costs`` (halt, or downgrade a gate's choice, when the next
    piece would leave no affordable way to the next exit) and exits early when confident.

    Args:
      model_dir: an export directory.
      reference: LiteRT's reference kernels (slow, the parity baseline) or its optimised builtin kernels
        (no XNNPACK delegate).
    """

    def __init__(self, model_dir: str, reference: bool = False):
        with open(os.path.join(model_dir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.interps = {}
        for p in self.manifest["pieces"]:
            for o in p["options"]:
                if not o["identity"]:
                    self.interps[(p["name"], o["name"])] = _interpreter(os.path.join(model_dir, o["file"]), reference)

    def _invoke(self, piece: str, option: str, x: np.ndarray) -> np.ndarray:
        interp = self.interps[(piece, option)]
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()

    def _confidence(self, piece: dict, logits: np.ndarray) -> float:
        q = piece["options"][0]["output"]
        z = (logits.astype(np.float64) - q["zero_point"]) * q["scale"]
        p = np.exp(z - z.max())
        return float(p.max() / p.sum())

    def run(self, image_uint8: np.ndarray, budget: float = float("inf"), thresholds=None, unit: str = "macs"
            ) -> dict:
        """Runs one (32, 32, 3) uint8 image.

        Returns ``pred`` (class, -1 if no exit was reached), ``exit`` (answering exit), ``cost`` (in ``unit``),
        ``decisions`` (option run per gated block, -1 where halted) and ``exit_logits`` (int8, every exit run).
        """
        key = "macs" if unit == "macs" else "energy_uj"
        reserves = self.manifest["reserves_macs" if unit == "macs" else "reserves_energy_uj"]
        x = (image_uint8.astype(np.int16) - 128).astype(np.int8)[None]
        spent, option, exit_j, pred = 0.0, None, -1, -1
        decisions, exit_logits = [], []
        j = 0
        for p, reserve in zip(self.manifest["pieces"], reserves, strict=True):
            costs = [o[key] for o in p["options"]]
            if spent + min(costs) + reserve > budget:
                break
            if p["kind"] == "gate":
                option = int(np.argmax(self._invoke(p["name"], "run", x)[0]))
                spent += costs[0]
            elif p["kind"] == "block":
                k = len(costs) - 1 if option is None else option
                while k > 0 and spent + costs[k] + reserve > budget:
                    k -= 1
                o = p["options"][k]
                if not o["identity"]:
                    x = self._invoke(p["name"], o["name"], x)
                spent += costs[k]
                if option is not None:
                    decisions.append(k)
                option = None
            elif p["kind"] == "exit":
                logits = self._invoke(p["name"], "run", x)[0]
                spent += costs[0]
                exit_logits.append(logits)
                exit_j, pred = j, int(np.argmax(logits))
                if thresholds is not None and self._confidence(p, logits) >= thresholds[min(j, len(thresholds) - 1)]:
                    break
                j += 1
            else:
                x = self._invoke(p["name"], "run", x)
                spent += costs[0]
        return {"pred": pred, "exit": exit_j, "cost": spent, "decisions": decisions, "exit_logits": exit_logits}


def compare(model, cfg, model_dir: str, images: np.ndarray, mean, std, batch_size: int = 100) -> dict:
    """Agreement of gate decisions and exit argmax between a Keras model and the int8 pieces.

    Gate agreement counts every gated block of every image; a flipped gate changes what follows, so this
    measures the deployed path as it is, not block by block.
    """
    import tensorflow as tf

    from ddi_tf.data import normalize
    from ddi_tf.model import set_gate_mode

    set_gate_mode(model, "learned")
    fn = tf.function(lambda x: model(x, training=False))
    k_dec, k_exit = [], []
    for s in range(0, len(images), batch_size):
        x = normalize(images[s:s + batch_size], mean, std)
        out = {k: v.numpy() for k, v in fn(x).items()}
        k_dec.append(np.stack([out[f"block{b}_decision"].argmax(-1) for b in range(cfg.num_blocks)], 1)
                     if cfg.gated else np.zeros((len(x), 0), int))
        k_exit.append(np.stack([out[f"exit{j}_logits"].argmax(-1) for j in range(len(cfg.exit_positions))], 1))
    k_dec, k_exit = np.concatenate(k_dec), np.concatenate(k_exit)
    loop = ReferenceLoop(model_dir, reference=True)
    t_dec, t_exit = [], []
    for img in images:
        r = loop.run(img)
        t_dec.append(r["decisions"])
        t_exit.append([int(np.argmax(v)) for v in r["exit_logits"]])
    t_dec, t_exit = np.asarray(t_dec, int).reshape(k_dec.shape), np.asarray(t_exit)
    return {
        "examples": int(len(images)),
        "gate_agreement": float((t_dec == k_dec).mean()) if k_dec.size else 1.0,
        "exit_agreement": [float(v) for v in (t_exit == k_exit).mean(axis=0)],
        "exit_agreement_min": float((t_exit == k_exit).mean(axis=0).min()),
        "int8_decisions": t_dec, "int8_exit_pred": t_exit, "keras_exit_pred": k_exit,
    }


def budget_sweep(model, cfg, model_dir: str, images: np.ndarray, labels: np.ndarray, mean, std,
                 fractions: list[float], batch_size: int = 100) -> list[dict]:
    """Float Keras vs int8 pieces under the same hard MAC budgets (learned gates, no early exit).

    For each budget (a fraction of the full cost): both accuracies, the int8 path's mean/max MACs, samples
    over budget (must be 0) and the fraction of identical predictions.
    """
    from ddi_tf.arch import build_pieces
    from ddi_tf.costs import cost_table
    from ddi_tf.evaluate import Predictor
    from ddi_tf.model import build_model, copy_weights
    from ddi_tf.policies import choose_exit

    table = cost_table(build_pieces(cfg), "macs")
    budget_model = build_model(cfg, table, budget_input=True)
    copy_weights(model, budget_model)
    run = Predictor(budget_model, batch_size, mean, std)
    loop = ReferenceLoop(model_dir)
    rows = []
    for f in fractions:
        budget = f * table.full_cost()
        outs = run(images, labels, mode="learned" if cfg.gated else "full", budget=budget)
        idx = choose_exit(outs, 1.0 + 1e-9)
        keras_pred = np.where(idx >= 0, outs.pred[np.arange(len(idx)), np.maximum(idx, 0)], -1)
        res = [loop.run(img, budget=budget) for img in images]
        pred = np.array([r["pred"] for r in res])
        cost = np.array([r["cost"] for r in res])
        rows.append({"budget_fraction": f, "budget_macs": budget,
                     "float_accuracy": float((keras_pred == labels).mean()),
                     "int8_accuracy": float((pred == labels).mean()), "int8_mean_macs": float(cost.mean()),
                     "int8_max_macs": float(cost.max()), "over_budget": int((cost > budget).sum()),
                     "prediction_agreement": float((pred == keras_pred).mean())})
    return rows


def main(argv: list[str]) -> None:
    """CLI."""
    del argv
    from absl import flags

    import ddi_tf  # noqa: F401
    from ddi_tf import data as data_lib
    from ddi_tf.export import load_trained
    from ddi_tf.trainer import TrainConfig, load_data

    FLAGS = flags.FLAGS  # noqa: N806
    cfg, train_conf, model = load_trained(FLAGS.workdir)
    tcfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in train_conf.items()})
    data = load_data(tcfg)
    mean, std = data_lib.normalization_for(tcfg.dataset if tcfg.dataset != "synthetic" else "cifar10")
    x, y = data.x_test[: FLAGS.limit or None], data.y_test[: FLAGS.limit or None]
    res = compare(model, cfg, FLAGS.model_dir, x, mean, std)
    res["int8_accuracy_last_exit"] = float((res["int8_exit_pred"][:, -1] == y).mean())
    res["keras_accuracy_last_exit"] = float((res["keras_exit_pred"][:, -1] == y).mean())
    out = {k: v for k, v in res.items() if not isinstance(v, np.ndarray)}
    if FLAGS.budget_fractions:
        out["budgets"] = budget_sweep(model, cfg, FLAGS.model_dir, x, y, mean, std,
                                      [float(v) for v in FLAGS.budget_fractions])
    print(json.dumps(out, indent=2))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "Training work directory.")
    flags.DEFINE_string("model_dir", None, "Export directory.")
    flags.DEFINE_integer("limit", 1000, "Test images (0: all).")
    flags.DEFINE_string("json", None, "Also write the result here.")
    flags.DEFINE_list("budget_fractions", ["0.25", "0.5", "0.75", "1.0"],
                      "Budgets (fractions of the full MACs) at which float and int8 accuracy are compared.")
    flags.mark_flags_as_required(["workdir", "model_dir"])
    app.run(main)
