"""Issue 16: rnn (shared-LSTM) gates exported as int8 pieces carrying their state, for ResNet and DenseNet."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ddi_tf  # noqa: F401
from ddi_tf.deploy import export as export_lib
from tests.conftest import EXPORT_MODEL, check_int8_follows_keras, train_and_export
from tests.test_densenet_export import DENSE_MODEL

MICRO = Path(__file__).resolve().parents[1] / "micro"
RNN_RESNET = dataclasses.replace(EXPORT_MODEL, gate_type="rnn", gate_proj=8, min_group_channels=0)


@pytest.fixture(scope="module")
def rnn_export(tmp_path_factory):
    """The tiny ResNet with rnn gates, trained on synthetic data and exported."""
    return train_and_export(RNN_RESNET, tmp_path_factory.mktemp("rnn_resnet"))


def _state_chain_checks(manifest: dict, units: int) -> None:
    grids = manifest["gate_state"]
    assert grids["units"] == units
    for k in ("h", "c"):  # 0 lies exactly on both grids: the first gate reads the zero point as 0.0
        assert -128 <= grids[k]["zero_point"] <= 127
        q = (0.0 - grids[k]["lo"]) / grids[k]["scale"]
        assert q == pytest.approx(round(q), abs=1e-6)
    gates = [o for p in manifest["pieces"] if p["kind"] == "gate" for o in p["options"]]
    assert gates and all(sorted(o["state"]) == ["c", "c_out", "h", "h_out"] for o in gates)
    for o in gates:
        for name, t in o["state"].items():
            grid = grids[name[0]]
            assert t["dtype"] == "int8" and t["shape"] == [1, grids["units"]]
            assert (t["scale"], t["zero_point"]) == pytest.approx((grid["scale"], grid["zero_point"]))


def test_rnn_gate_pieces_carry_their_state_on_fixed_grids(rnn_export):
    from ddi_runtime.manifest import load_manifest

    _, out, manifest, _ = rnn_export
    summary = export_lib.export_summary(manifest, out)
    assert summary["float_tensors"] == 0 and summary["boundary_quantization_problems"] == 0
    assert {"LOGISTIC", "TANH", "FULLY_CONNECTED"} <= set(summary["ops"])
    _state_chain_checks(manifest, RNN_RESNET.gate_hidden)
    assert load_manifest(out)["cost_sha256"] == manifest["cost_sha256"]  # the gates' MACs recomputed from graphs
    broken = json.loads(json.dumps(manifest))
    gate = next(p for p in broken["pieces"] if p["kind"] == "gate")
    gate["options"][0]["state"]["h_out"]["scale"] *= 2  # a gate whose new state is off the next gate's grid
    assert any("state h_out" in p for p in export_lib.check_manifest_quantization(broken))


def test_rnn_int8_follows_keras(rnn_export):
    """Parity with the Keras model as for ff gates: decisions, exits, and 0 over budget under budgets."""
    workdir, out, _, data = rnn_export
    check_int8_follows_keras(workdir, out, data)


def test_rnn_state_changes_the_decision_inputs(rnn_export):
    """The state really flows: a gate piece given a different (h, c) returns different logits."""
    from ddi_runtime import Scheduler

    _, out, manifest, _ = rnn_export
    sched = Scheduler(out, interpreter="litert", delegate="none")
    assert sched.loop == "python"  # the C loop does not carry the state: it declines, the Python loop runs
    gate = next(p for p in manifest["pieces"] if p["kind"] == "gate" and p["index"] > 0)
    interp, i, o = sched.interps[(gate["name"], "run")]
    h_in, c_in, _, _ = sched.state_io[id(interp)]
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=gate["options"][0]["input"]["shape"], dtype=np.int8)
    outs = []
    for state in (sched.initial_state, tuple(rng.integers(-128, 128, size=s.shape, dtype=np.int8)
                                             for s in sched.initial_state)):
        interp.set_tensor(i, x)
        interp.set_tensor(h_in, state[0])
        interp.set_tensor(c_in, state[1])
        interp.invoke()
        outs.append(interp.get_tensor(o).copy())
    assert not np.array_equal(*outs)


def test_rnn_export_is_refused_on_the_mcu_path(rnn_export, tmp_path):
    _, out, _, _ = rnn_export
    r = subprocess.run([sys.executable, str(MICRO / "gen.py"), f"--model_dir={out}", f"--out={tmp_path / 'gen'}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "rnn gates" in r.stdout + r.stderr


def test_rnn_densenet_exports_and_follows_keras(tmp_path_factory):
    workdir, out, manifest, data = train_and_export(
        dataclasses.replace(DENSE_MODEL, gate_type="rnn", gate_proj=8), tmp_path_factory.mktemp("rnn_densenet"))
    summary = export_lib.export_summary(manifest, out)
    assert summary["float_tensors"] == 0 and summary["boundary_quantization_problems"] == 0
    _state_chain_checks(manifest, DENSE_MODEL.gate_hidden)
    check_int8_follows_keras(workdir, out, data)
