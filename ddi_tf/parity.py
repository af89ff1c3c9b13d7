"""Parity between the Keras model and the exported int8 pieces, run in order by a minimal reference loop.

    python -m ddi_tf.parity --workdir=W --model_dir=D [--limit=1000] [--budget_fractions=...] [--layers]
        [--json=out.json]

The int8 side is the board runtime's scheduler (``tflite/ddi_runtime``) over ``D/stages`` with LiteRT's
builtin kernels and no delegate (bit-identical to tflite-runtime and tf.lite without delegates): following
each gate's argmax and computing every exit (no early exit, no budget), its gate decisions and every exit's
argmax are compared with the Keras model's on the same images (the test split of the run's data set); then
float and int8 accuracy are compared under the same hard budgets.

The Keras side of the agreement is the QAT model (``checkpoints_qat/``, fake-quantised where the int8 pieces
quantize) when the run has a QAT stage, else the float model; the budget sweep always compares with the float
model (after QAT: the QAT-trained weights without fake quantisation).
"""

from __future__ import annotations

import json

import numpy as np


def _scheduler(model_dir: str):
    try:
        from ddi_runtime import Scheduler
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("parity needs the board runtime: pip install -e ./tflite") from e
    return Scheduler(model_dir, interpreter="litert", delegate="none")


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
    sched = _scheduler(model_dir)
    t_dec, t_exit = [], []
    for img in images:
        r = sched.run(img)
        t_dec.append(r.decisions)
        t_exit.append([int(np.argmax(v)) for v in r.exit_logits])
    t_dec, t_exit = np.asarray(t_dec, int).reshape(k_dec.shape), np.asarray(t_exit)
    return {
        "examples": int(len(images)),
        "gate_agreement": float((t_dec == k_dec).mean()) if k_dec.size else 1.0,
        "exit_agreement": [float(v) for v in (t_exit == k_exit).mean(axis=0)],
        "exit_agreement_min": float((t_exit == k_exit).mean(axis=0).min()),
        "int8_decisions": t_dec, "int8_exit_pred": t_exit, "keras_exit_pred": k_exit,
    }


def edge_agreement(model, cfg, model_dir: str, images: np.ndarray, mean, std, batch_size: int = 100) -> list[dict]:
    """Where int8 and its Keras reference part: element by element, the int8 feature maps after the stem and
    after every block (every block at its widest option) against the Keras model's on the int8 grid.

    Returns one row per tensor: the fractions of elements equal, one int8 step apart and further apart. Against
    a QAT model the int8 pieces compute the same arithmetic up to integer rounding; the rows show how those
    rounding differences grow with depth.
    """
    import tf_keras as keras

    from ddi_tf.data import normalize
    from ddi_tf.model import set_gate_mode

    names = ["stem_relu"] + [f"block{b}_relu2" for b in range(cfg.num_blocks)]
    layer_names = {layer.name for layer in model.layers}
    outputs = [model.get_layer(n if n in layer_names else f"quant_{n}").output for n in names]
    if cfg.gated:
        set_gate_mode(model, "full")
    sub = keras.Model(model.input, outputs)
    ref: list[list[np.ndarray]] = [[] for _ in names]
    for s in range(0, len(images), batch_size):
        for i, v in enumerate(sub(normalize(images[s:s + batch_size], mean, std), training=False)):
            ref[i].append(v.numpy())
    if cfg.gated:
        set_gate_mode(model, "learned")
    sched = _scheduler(model_dir)
    pieces = {p["name"]: p for p in sched.manifest["pieces"]}
    steps = [("stem", pieces["stem"]["options"][0])] + [
        (f"block{b}", pieces[f"block{b}"]["options"][-1]) for b in range(cfg.num_blocks)]
    int8: list[list[np.ndarray]] = [[] for _ in steps]
    for img in images:
        x = (np.asarray(img, np.uint8) ^ np.uint8(128)).view(np.int8)[None]
        for i, (piece, option) in enumerate(steps):
            interp, a, o = sched.interps[(piece, option["name"])]
            interp.set_tensor(a, x)
            interp.invoke()
            x = interp.get_tensor(o)
            int8[i].append(x)
    rows = []
    for i, (_, option) in enumerate(steps):
        q = option["output"]
        grid = np.round(np.concatenate(ref[i]).astype(np.float64) / q["scale"]) + q["zero_point"]
        d = np.abs(np.concatenate(int8[i]).astype(np.int64) - grid)
        rows.append({"tensor": names[i], "equal": float((d == 0).mean()), "one_step": float((d == 1).mean()),
                     "more": float((d > 1).mean())})
    return rows


def budget_sweep(model, cfg, model_dir: str, images: np.ndarray, labels: np.ndarray, mean, std,
                 fractions: list[float], batch_size: int = 100, qat_model=None) -> list[dict]:
    """Float Keras vs int8 pieces under the same hard MAC budgets (learned gates, no early exit).

    For each budget (a fraction of the full cost): both accuracies, the int8 path's mean/max MACs, samples
    over budget (must be 0) and the fraction of identical predictions. With ``qat_model`` (the run's QAT
    model) also the QAT model's accuracy under the same budgets and its agreement with int8. The same again
    with exits deferred on both sides (keys prefixed ``deferred_``: ``build_model(defer_exits=True)`` against
    ``Scheduler.run(defer_exits=True)``).
    """
    from ddi_tf.arch import build_pieces
    from ddi_tf.costs import cost_table
    from ddi_tf.evaluate import Predictor
    from ddi_tf.model import build_model, copy_weights
    from ddi_tf.policies import choose_exit

    table = cost_table(build_pieces(cfg), "macs")
    runs, runs_qat = {}, {}
    for defer in (False, True):  # the Keras policy with every exit run, and with exits deferred
        budget_model = build_model(cfg, table, budget_input=True, defer_exits=defer)
        copy_weights(model, budget_model)
        runs[defer] = Predictor(budget_model, batch_size, mean, std)
        if qat_model is not None:
            from ddi_tf import qat

            budget_qat = qat.quantize_model(budget_model)
            qat.copy_qat_variables(qat_model, budget_qat)
            runs_qat[defer] = Predictor(budget_qat, batch_size, mean, std)
    sched = _scheduler(model_dir)
    plan = sched.costs("macs")

    def budget_pred(predictor, budget: float) -> np.ndarray:
        """Each image's answer under ``budget`` (latest exit reached; -1: none), learned gates, no early exit."""
        outs = predictor(images, labels, mode="learned" if cfg.gated else "full", budget=budget)
        idx = choose_exit(outs, 1.0 + 1e-9)
        return np.where(idx >= 0, outs.pred[np.arange(len(idx)), np.maximum(idx, 0)], -1)

    rows = []
    for f in fractions:
        budget = f * table.full_cost()
        row = {"budget_fraction": f, "budget_macs": budget}
        for defer, prefix in ((False, ""), (True, "deferred_")):
            keras_pred = budget_pred(runs[defer], budget)
            res = [sched.run(img, budget, "macs", None, plan, defer_exits=defer) for img in images]
            pred = np.array([r.pred for r in res])
            cost = np.array([r.cost for r in res])
            row.update({f"{prefix}float_accuracy": float((keras_pred == labels).mean()),
                        f"{prefix}int8_accuracy": float((pred == labels).mean()),
                        f"{prefix}int8_mean_macs": float(cost.mean()), f"{prefix}int8_max_macs": float(cost.max()),
                        f"{prefix}over_budget": int((cost > budget).sum()),
                        f"{prefix}prediction_agreement": float((pred == keras_pred).mean())})
            if defer in runs_qat:
                q_pred = budget_pred(runs_qat[defer], budget)
                row.update({f"{prefix}qat_accuracy": float((q_pred == labels).mean()),
                            f"{prefix}qat_prediction_agreement": float((pred == q_pred).mean())})
        rows.append(row)
    return rows


def _positive_fractions(values: list[str]) -> bool:
    """The --budget_fractions validator: every value a positive, finite number."""
    try:
        return all(0.0 < float(v) < float("inf") for v in values)
    except ValueError:
        return False


def main(argv: list[str]) -> None:
    """CLI."""
    del argv
    from absl import flags

    import ddi_tf  # noqa: F401
    from ddi_tf.export import load_trained
    from ddi_tf.qat import restore_qat
    from ddi_tf.trainer import TrainConfig, load_data

    FLAGS = flags.FLAGS  # noqa: N806
    cfg, train_conf, model = load_trained(FLAGS.workdir)
    tcfg = TrainConfig.from_dict(train_conf)
    data = load_data(tcfg)
    mean, std = tcfg.normalization
    # a seeded random subset: the test split of an image-folder archive is ordered by class
    order = np.random.default_rng(0).permutation(len(data.y_test))[: FLAGS.limit or None]
    x, y = data.x_test[order], data.y_test[order]
    qat_model = restore_qat(FLAGS.workdir, cfg, model)  # (model then holds the QAT-trained float weights)
    # the Keras reference: the QAT model (fake-quantised like the int8 pieces) when the run has a QAT stage
    res = compare(qat_model or model, cfg, FLAGS.model_dir, x, mean, std)
    res["reference"] = "qat" if qat_model is not None else "float"
    res["int8_accuracy_last_exit"] = float((res["int8_exit_pred"][:, -1] == y).mean())
    res["keras_accuracy_last_exit"] = float((res["keras_exit_pred"][:, -1] == y).mean())
    out = {k: v for k, v in res.items() if not isinstance(v, np.ndarray)}
    if FLAGS.layers:
        out["edge_agreement"] = edge_agreement(qat_model or model, cfg, FLAGS.model_dir, x[:200], mean, std)
    if FLAGS.budget_fractions:
        out["budgets"] = budget_sweep(model, cfg, FLAGS.model_dir, x, y, mean, std,
                                      [float(v) for v in FLAGS.budget_fractions], qat_model=qat_model)
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
    flags.DEFINE_boolean("layers", False, "Also compare the feature maps after the stem and every block, element "
                         "by element on the int8 grid (200 images, every block at full width).")
    flags.DEFINE_list("budget_fractions", ["0.25", "0.5", "0.75", "1.0"],
                      "Budgets (fractions of the full MACs, positive and finite) at which float and int8 accuracy "
                      "are compared.")
    flags.register_validator("budget_fractions", _positive_fractions,
                             "--budget_fractions must be positive, finite numbers (NaN, 0, < 0 and inf are refused)")
    flags.mark_flags_as_required(["workdir", "model_dir"])
    app.run(main)
