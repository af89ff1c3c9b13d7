"""Budgets that are no budget (NaN, zero, negative, -inf) are refused by the Keras policy; inf means none."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

import ddi_tf  # noqa: F401
from ddi_tf.core.config import ModelConfig
from ddi_tf.evaluation import policies
from ddi_tf.model.layers import BudgetGuard

BAD = [math.nan, -math.inf, 0.0, -0.0, -2.5]
TINY = ModelConfig(depth=8, groups=2, exits=(1,), exit_width=8, gate_hidden=4)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("gated", [False, True])
def test_budget_guard_refuses_nan_and_non_positive_budgets(value, gated):
    guard = BudgetGuard([10.0, 20.0] if gated else [10.0], reserve=5.0, use_budget=True)
    state = tf.zeros((3, 2), tf.float64)
    budget = tf.constant([100.0, value, 100.0], tf.float64)
    inputs = [state, tf.one_hot([1, 1, 1], 2)] if gated else [state]
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive"):
        guard(inputs + [budget])
    fn = tf.function(lambda b: guard(inputs + [b]))  # traced (as Predictor runs it): the check still runs
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive"):
        fn(budget)


def test_budget_guard_reads_inf_as_no_budget():
    guard = BudgetGuard([10.0], reserve=5.0, use_budget=True)
    out = guard([tf.zeros((2, 2), tf.float64), tf.constant([math.inf, 12.0], tf.float64)]).numpy()
    np.testing.assert_array_equal(out, [[10.0, 0.0], [0.0, 1.0]])  # inf: runs; 12 < 10 + 5: halts


@pytest.mark.parametrize("value", BAD)
def test_budget_model_refuses_nan_and_non_positive_budgets(value):
    from ddi_tf import data as data_lib
    from ddi_tf.evaluation.evaluate import Predictor
    from ddi_tf.model.build import build_model

    model = build_model(TINY, budget_input=True)
    x = np.zeros((4, 32, 32, 3), np.uint8)
    y = np.zeros((4,), np.int64)
    run = Predictor(model, 4, *data_lib.normalization_for("cifar10"))
    assert run(x, y, mode="full", budget=math.inf).reached.all()  # inf: no budget
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive"):
        run(x, y, mode="full", budget=value)


@pytest.mark.parametrize("value", BAD)
def test_policies_refuse_nan_and_non_positive_budgets(value):
    with pytest.raises(ValueError, match="positive"):
        policies.simulate_budget([[10.0], [5.0]], ["fixed", "exit"], [5.0, 0.0], [0, 0], value)
    outputs = policies.ExitOutputs(probs_max=np.ones((2, 1)), pred=np.zeros((2, 1), np.int64),
                                   cost=np.ones((2, 1)), reached=np.ones((2, 1), bool), labels=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="positive"):
        policies.evaluate(outputs, budget=value)
    assert policies.evaluate(outputs, budget=math.inf)["over_budget"] == 0
    assert policies.simulate_budget([[10.0], [5.0]], ["fixed", "exit"], [5.0, 0.0], [0, 0], math.inf)[1] == 15.0


@pytest.mark.parametrize("value", ["nan", "0", "-0.5", "inf"])
def test_parity_cli_refuses_non_positive_budget_fractions(tmp_path, value):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "ddi_tf.parity", f"--workdir={tmp_path}", f"--model_dir={tmp_path}",
                          f"--budget_fractions=0.5,{value}"], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "--budget_fractions must be positive" in res.stderr
