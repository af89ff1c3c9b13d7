"""Custom Keras layers of the DDI network. All of them are weightless.

Trainable parts (gate dense layers, convolutions, batch norms) are standard Keras layers, so that
tensorflow-model-optimization can quantize them with its default configs; these layers only route,
select and account. Each is registered for serialisation and mirrors its constructor in ``get_config``.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

GATE_MODES = ("learned", "full", "random", "fixed", "sample")


def last_argmax(x: tf.Tensor) -> tf.Tensor:
    """Index of the maximum along the last axis, the last one on ties (int64)."""
    n = tf.shape(x, out_type=tf.int64)[-1]
    return n - 1 - tf.argmax(tf.reverse(x, axis=[-1]), axis=-1)


@keras.utils.register_keras_serializable(package="ddi_tf")
class GateDecision(keras.layers.Layer):
    """Turns gate logits over the options into a hard one-hot decision per sample.

    Forward: a one-hot of the argmax of the logits (exactly 0/1; on a tie the later, wider option, as the
    int8 runtimes do: quantized logits tie often, and a first-max rule would then skip). Backward: the softmax
    (straight-through), or, with ``estimator='gumbel'`` while training, a Gumbel-softmax sample at
    ``temperature`` made hard in the forward pass. At inference both are the plain argmax.

    Outside the saved config, ``mode`` (set with ``ddi_tf.model.build.set_gate_mode``) overrides the decision:
    ``learned`` (default), ``full`` (always the widest option: the static path), ``random`` (with
    probability ``random_prob`` a uniformly random option, else full; for training every width and for
    calibrating activation ranges over every option) and
    ``fixed`` (always ``fixed_option``) and ``sample`` (an option drawn from the gate's softmax while
    training: the REINFORCE stage).

    Args:
      num_options: number of options (G + 1).
      estimator: ``st`` or ``gumbel``.
      temperature: Gumbel-softmax temperature.
    """

    def __init__(self, num_options: int, estimator: str = "st", temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_options = int(num_options)
        self.estimator = estimator
        self.temperature = float(temperature)
        self.mode = "learned"
        self.random_prob = 0.0
        self.fixed_option = self.num_options - 1

    def call(self, logits: tf.Tensor, training: bool | None = None) -> list[tf.Tensor]:
        probs = tf.nn.softmax(logits, axis=-1)
        n = self.num_options
        if self.mode in ("full", "fixed", "random"):
            option = n - 1 if self.mode != "fixed" else self.fixed_option
            idx = tf.fill(tf.shape(logits)[:1], option)
            if self.mode == "random":
                batch = tf.shape(logits)[:1]
                rand = tf.random.uniform(batch, 0, n, dtype=tf.int32)
                idx = tf.where(tf.random.uniform(batch) < self.random_prob, rand, idx)
            return [tf.one_hot(idx, n, dtype=logits.dtype), probs]
        soft = probs
        if self.mode == "sample" and training:
            idx = tf.random.categorical(tf.math.log(probs + 1e-9), 1, dtype=tf.int32)[:, 0]
            return [tf.one_hot(idx, n, dtype=logits.dtype), probs]
        if training and self.estimator == "gumbel":
            u = tf.random.uniform(tf.shape(logits), 1e-9, 1.0 - 1e-9, dtype=logits.dtype)
            soft = tf.nn.softmax((logits - tf.math.log(-tf.math.log(u))) / self.temperature, axis=-1)
        scores = logits if soft is probs else soft
        hard = tf.one_hot(last_argmax(scores), n, dtype=logits.dtype)
        return [hard + (soft - tf.stop_gradient(soft)), probs]  # exactly 0/1 forward

    def compute_output_shape(self, input_shape):
        return [input_shape, input_shape]

    def get_config(self) -> dict:
        return {**super().get_config(), "num_options": self.num_options, "estimator": self.estimator,
                "temperature": self.temperature}


@keras.utils.register_keras_serializable(package="ddi_tf")
class ChannelGroups(keras.layers.Layer):
    """Splits the channel axis into ``groups`` equal, contiguous groups (a list of tensors).

    Args:
      groups: number of groups; must divide the channel count.
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x: tf.Tensor) -> list[tf.Tensor]:
        if self.groups == 1:
            return [tf.identity(x)]
        return tf.split(x, self.groups, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "groups": self.groups}


@keras.utils.register_keras_serializable(package="ddi_tf")
class OptionSelect(keras.layers.Layer):
    """Per sample, keeps the branch its one-hot decision picked.

    Inputs ``[onehot (B, G+1), base, branch_1, ..., branch_G]`` (with ``has_base``) or
    ``[onehot, branch_1, ..., branch_G]``. Output: ``base + sum_k onehot[:, k] * branch_k``, so option 0
    (skip) leaves exactly ``base`` (the shortcut) or zeros. Gradients reach the decision through the
    one-hot's straight-through estimator.

    Args:
      has_base: whether the second input is a base tensor (the residual shortcut).
    """

    def __init__(self, has_base: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.has_base = bool(has_base)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        onehot = inputs[0]
        rest = inputs[1:]
        base = rest[0] if self.has_base else None
        branches = rest[1:] if self.has_base else rest
        out = base
        for k, branch in enumerate(branches, start=1):
            w = tf.reshape(onehot[:, k], [-1] + [1] * (branch.shape.rank - 1))
            term = w * branch
            out = term if out is None else out + term
        return out

    def get_config(self) -> dict:
        return {**super().get_config(), "has_base": self.has_base}


@keras.utils.register_keras_serializable(package="ddi_tf")
class LSTMCellOps(keras.layers.Layer):
    """The elementwise part of an LSTM cell: ``[z (B, 4H), c (B, H)] -> [h, c']``.

    The affine part ``z = W [x, h] + b`` is a standard Dense layer shared by every gate (SkipNet's single
    LSTM across blocks), so it quantizes like any Dense layer.

    Args:
      units: H, the state size.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def call(self, inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        z, c = inputs
        i, f, g, o = tf.split(z, 4, axis=-1)
        c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return [tf.sigmoid(o) * tf.tanh(c_new), c_new]

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


@keras.utils.register_keras_serializable(package="ddi_tf")
class BatchZeros(keras.layers.Layer):
    """Zeros of shape (B, units) for a batch of B inputs (initial states).

    Args:
      units: width of the zeros.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.zeros(tf.stack([tf.shape(x)[0], self.units]), dtype=self.compute_dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


@keras.utils.register_keras_serializable(package="ddi_tf")
class BudgetGuard(keras.layers.Layer):
    """Accounts one piece's cost and enforces the per-sample budget (the reservation rule).

    State is (B, 2) float64: spent cost and a halted flag. Before the piece, a sample halts if the piece's
    cheapest option plus ``reserve`` (the cheapest way on to the next exit) no longer fits its budget.
    For a gated block (``len(costs) > 1``, with a one-hot input) the chosen option is kept when it fits,
    else the widest cheaper option that fits; halted samples get option 0 (skip) and are charged
    nothing. The gate's straight-through gradient flows through the one-hot into the cost.

    Inputs: ``[state]`` or ``[state, onehot]``, plus ``budget`` (B,) last when ``use_budget``: positive, ``inf``
    for no budget; a NaN, zero or negative budget is an InvalidArgumentError.
    Outputs: ``state'`` or ``[state', onehot']``.

    With ``defer`` (deferred exits, the board runtime's ``--defer_exits``; budget-only policies) the state is
    (B, 4): spent, halted, the kept exit's cost and a kept flag. An exit (``ahead``: the cheapest way from after
    it to the next exit; None for the last) whose next exit is affordable is kept instead of charged; it stays
    reserved, answers (and is charged) if the sample stops before the next exit, and while it is kept a block
    the budget would cut down to its skip option (its gate chose more) stops the sample. The same rule as
    ``ddi_tf.evaluation.policies.simulate_budget(defer_exits=True)``.

    Args:
      costs: cost of each option, cheapest first.
      reserve: cheapest cost from after this piece to the next exit (0 for exits).
      use_budget: whether a budget input is given (without it nothing halts: cost accounting only).
      defer: deferred exits (needs ``use_budget``).
      is_exit: this piece is an exit.
      ahead: for an exit with ``defer``, the cheapest way from after it to the next exit (None: last exit).
    """

    def __init__(self, costs: list[float], reserve: float = 0.0, use_budget: bool = False, defer: bool = False,
                 is_exit: bool = False, ahead: float | None = None, **kwargs):
        kwargs.setdefault("dtype", "float64")
        super().__init__(**kwargs)
        self.costs = [float(c) for c in costs]
        self.reserve = float(reserve)
        self.use_budget = bool(use_budget)
        self.defer = bool(defer)
        self.is_exit = bool(is_exit)
        self.ahead = None if ahead is None else float(ahead)
        if self.defer and not self.use_budget:
            raise ValueError("deferred exits need a budget input (use_budget=True)")

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor | list[tf.Tensor]:
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        budget = tf.reshape(tf.cast(inputs.pop(), tf.float64), [-1]) if self.use_budget else None
        if budget is not None:  # a NaN budget compares false with every cost: it would run as no budget at all
            tf.debugging.assert_positive(budget, message=f"{self.name}: every budget must be positive (inf: no "
                                         "budget); got NaN, zero or a negative budget")
        state = tf.cast(inputs[0], tf.float64)
        onehot = inputs[1] if len(inputs) > 1 else None
        spent, halted = state[:, 0], state[:, 1]
        # without deferred exits nothing is ever kept: the same rule with held = kept = 0 (a 2-column state)
        held, kept = (state[:, 2], state[:, 3]) if self.defer else (tf.zeros_like(spent), tf.zeros_like(spent))
        if budget is None:  # cost accounting only: nothing halts or is cut down
            budget = tf.fill(tf.shape(spent), tf.constant(float("inf"), tf.float64))
        costs = tf.constant(self.costs, tf.float64)
        reserve = tf.constant(self.reserve, tf.float64)
        need = tf.fill(tf.shape(spent), reserve) if self.is_exit else tf.maximum(reserve, held)
        alive = 1.0 - halted
        stop = alive * tf.cast(spent + costs[0] + need > budget, tf.float64)
        if onehot is None:
            run = alive - stop
            keep = tf.zeros_like(run)
            if self.is_exit and self.ahead is not None:
                keep = run * tf.cast(spent + self.ahead <= budget, tf.float64)
            spent = spent + (run - keep) * costs[0] + stop * kept * held  # (a kept exit answers a stop)
            if self.is_exit:  # this exit supersedes a kept one
                held, kept = keep * costs[0], keep
            else:
                held, kept = held * (1.0 - stop), kept * (1.0 - stop)
            return self._state(spent, halted + stop, held, kept)
        n = len(self.costs)
        oh = tf.cast(onehot, tf.float64)
        chosen = tf.argmax(oh, axis=-1, output_type=tf.int32)
        ks = tf.range(n, dtype=tf.int32)
        fits = (spent[:, None] + costs[None, :] + need[:, None] <= budget[:, None]) & (ks[None, :] <= chosen[:, None])
        best = tf.reduce_max(tf.where(fits, ks[None, :], 0), axis=-1)
        stop = stop + (alive - stop) * kept * tf.cast((best == 0) & (chosen > 0), tf.float64)
        run = alive - stop
        best = tf.where(run > 0, best, 0)
        oh = tf.where((best != chosen)[:, None], tf.one_hot(best, n, dtype=tf.float64), oh)
        spent = spent + run * tf.reduce_sum(oh * costs[None, :], axis=-1) + stop * kept * held
        return [self._state(spent, halted + stop, held * (1.0 - stop), kept * (1.0 - stop)), tf.cast(oh, tf.float32)]

    def _state(self, spent, halted, held, kept) -> tf.Tensor:
        return tf.stack([spent, halted, held, kept] if self.defer else [spent, halted], axis=1)

    def get_config(self) -> dict:
        return {**super().get_config(), "costs": self.costs, "reserve": self.reserve,
                "use_budget": self.use_budget, "defer": self.defer, "is_exit": self.is_exit, "ahead": self.ahead}


@keras.utils.register_keras_serializable(package="ddi_tf")
class CostState(keras.layers.Layer):
    """Splits a BudgetGuard state (B, 2) into the executed cost (B,) and a reached flag (B,) (1 = not halted)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float64")
        super().__init__(**kwargs)

    def call(self, state: tf.Tensor) -> list[tf.Tensor]:
        return [state[:, 0], 1.0 - state[:, 1]]


CUSTOM_OBJECTS = {c.__name__: c for c in (GateDecision, ChannelGroups, OptionSelect, LSTMCellOps, BatchZeros,
                                          BudgetGuard, CostState)}
"""Every custom layer, for ``custom_object_scope`` / ``quantize_scope``."""
