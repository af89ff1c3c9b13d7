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

import numpy as np

from ddi_tf.core import names
from ddi_tf.core.arch import build_pieces
from ddi_tf.deploy.pieces import edge_producer


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
    from ddi_tf.model.build import set_gate_mode

    set_gate_mode(model, "learned")
    fn = tf.function(lambda x: model(x, training=False))
    k_dec, k_exit = [], []
    for s in range(0, len(images), batch_size):
        x = normalize(images[s:s + batch_size], mean, std)
        out = {k: v.numpy() for k, v in fn(x).items()}
        k_dec.append(np.stack([out[names.decision(b)].argmax(-1) for b in range(cfg.num_blocks)], 1)
                     if cfg.gated else np.zeros((len(x), 0), int))
        k_exit.append(np.stack([out[names.exit_logits(j)].argmax(-1) for j in range(len(cfg.exit_positions))], 1))
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
    from ddi_tf.model.build import set_gate_mode

    writers = [p for p in build_pieces(cfg) if p.kind in ("fixed", "block")]  # stem, blocks (DenseNet: transitions)
    tensors = [edge_producer(cfg, p) for p in writers]
    layer_names = {layer.name for layer in model.layers}
    outputs = [model.get_layer(n if n in layer_names else f"quant_{n}").output for n in tensors]
    if cfg.gated:
        set_gate_mode(model, "full")
    sub = keras.Model(model.input, outputs)
    ref: list[list[np.ndarray]] = [[] for _ in tensors]
    for s in range(0, len(images), batch_size):
        for i, v in enumerate(sub(normalize(images[s:s + batch_size], mean, std), training=False)):
            ref[i].append(v.numpy())
    if cfg.gated:
        set_gate_mode(model, "learned")
    sched = _scheduler(model_dir)
    pieces = {p["name"]: p for p in sched.manifest["pieces"]}
    steps = [(p.name, pieces[p.name]["options"][-1]) for p in writers]
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
        rows.append({"tensor": tensors[i], "equal": float((d == 0).mean()), "one_step": float((d == 1).mean()),
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
    from ddi_tf.core.arch import build_pieces
    from ddi_tf.core.costs import cost_table
    from ddi_tf.evaluation.evaluate import Predictor
    from ddi_tf.evaluation.policies import choose_exit
    from ddi_tf.model.build import build_model
    from ddi_tf.model.weights import copy_weights

    table = cost_table(build_pieces(cfg), "macs")
    runs, runs_qat = {}, {}
    for defer in (False, True):  # the Keras policy with every exit run, and with exits deferred
        budget_model = build_model(cfg, table, budget_input=True, defer_exits=defer)
        copy_weights(model, budget_model)
        runs[defer] = Predictor(budget_model, batch_size, mean, std)
        if qat_model is not None:
            from ddi_tf.quant import qat

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
