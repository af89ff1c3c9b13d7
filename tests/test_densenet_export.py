"""Issue 16: a gated DenseNet-BC end to end on tiny shapes: train -> int8 export -> board runtime -> micro verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ddi_tf  # noqa: F401
from ddi_tf import data as data_lib
from ddi_tf.core.config import ModelConfig
from ddi_tf.deploy import export as export_lib
from ddi_tf.deploy.parity import compare, edge_agreement
from tests.conftest import check_int8_follows_keras, train_and_export

MICRO = Path(__file__).resolve().parents[1] / "micro"
# Two dense layers a stage (depth 16), growth 4, G = 2 bottleneck groups, an exit after stage 0 and the final one.
DENSE_MODEL = ModelConfig(backbone="densenet", depth=16, growth_rate=4, groups=2, exits=(2,), exit_width=8,
                          gate_hidden=8)


@pytest.fixture(scope="module")
def dense_export(tmp_path_factory):
    """The tiny DenseNet trained on synthetic data and exported: (workdir, export dir, manifest, data, test.npz)."""
    root = tmp_path_factory.mktemp("densenet")
    return (*train_and_export(DENSE_MODEL, root), str(root / "test.npz"))


def test_densenet_pieces_are_fully_int8_with_one_grid_per_stage(dense_export):
    from ddi_runtime.manifest import load_manifest

    _, out, manifest, _, _ = dense_export
    summary = export_lib.export_summary(manifest, out)
    assert summary["float_tensors"] == 0 and summary["boundary_quantization_problems"] == 0
    assert {"CONCATENATION", "PAD", "AVERAGE_POOL_2D"} <= set(summary["ops"])
    kinds = [p["kind"] for p in manifest["pieces"]]
    assert kinds.count("fixed") == 3  # the stem and two transitions
    assert load_manifest(out)["cost_sha256"] == manifest["cost_sha256"]  # MACs recomputed from every graph
    for p in manifest["pieces"]:
        if p["kind"] != "block":
            continue
        growth = p["options"][0]["output"]["shape"][3] - p["options"][0]["input"]["shape"][3]
        assert growth == DENSE_MODEL.growth_rate
        for o in p["options"]:  # in and out on the stage's one grid: the concatenation passes its input on as is
            assert o["input_edge"] == o["output_edge"]
            assert (o["input"]["scale"], o["input"]["zero_point"]) == (o["output"]["scale"], o["output"]["zero_point"])
        assert p["options"][0]["name"] == "skip" and p["options"][0]["macs"] == 0


def test_a_skipped_dense_layer_appends_exact_zeros(dense_export):
    """A skipped layer leaves its input untouched and its growth channels at the zero point (0.0 exactly)."""
    from ai_edge_litert.interpreter import Interpreter

    _, out, manifest, _, _ = dense_export
    rng = np.random.default_rng(0)
    for p in manifest["pieces"]:
        if p["kind"] != "block":
            continue
        skip = p["options"][0]
        interp = Interpreter(model_path=str(Path(out, skip["file"])))
        interp.allocate_tensors()
        x = rng.integers(-128, 128, size=skip["input"]["shape"], dtype=np.int8)
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        y = interp.get_tensor(interp.get_output_details()[0]["index"])
        c = x.shape[3]
        np.testing.assert_array_equal(y[..., :c], x)
        assert np.all(y[..., c:] == skip["output"]["zero_point"])


def test_densenet_int8_follows_keras_under_budgets(dense_export):
    workdir, out, manifest, data, _ = dense_export
    cfg, model, mean, std = check_int8_follows_keras(workdir, out, data)
    edges = edge_agreement(model, cfg, out, data.x_test[:16], mean, std)
    names = [e["tensor"] for e in edges]
    assert names[0] == "stem_conv" and "transition0_pool" in names and "block5_concat" in names
    assert all(e["equal"] + e["one_step"] >= 0.8 for e in edges), edges


def test_densenet_c_loop_equals_python_loop(dense_export):
    from ddi_runtime import Scheduler

    _, out, manifest, data, _ = dense_export
    sched = Scheduler(out, interpreter="litert", delegate="none")
    if sched.loop != "c":
        pytest.skip("the C loop extension is not built here")
    rng = np.random.default_rng(1)
    lo, hi = manifest["cheapest_answer_macs"], manifest["full_macs"]
    for img in data.x_test[:24]:
        budget = float(rng.uniform(lo, hi))
        for defer in (False, True):
            a = sched.run(img, budget, defer_exits=defer)
            b = sched.run_python(img, budget, defer_exits=defer)
            assert (a.pred, a.exit, a.cost, a.decisions, a.halted) == (b.pred, b.exit, b.cost, b.decisions, b.halted)
            assert a.cost <= budget


def test_densenet_on_tflm_kernels(dense_export, tmp_path):
    _, out, manifest, _, npz = dense_export
    budget = (manifest["cheapest_answer_macs"] + manifest["full_macs"]) / 2
    for extra in ([], [f"--budget_macs={budget}", "--defer_exits"]):
        report = tmp_path / "verify.json"
        r = subprocess.run([sys.executable, str(MICRO / "verify.py"), f"--model_dir={out}", f"--data={npz}",
                            "--limit=64", f"--json={report}", *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(report.read_text())
        assert res["missing_ops"] == {} and res["over_budget"] == 0
        assert res["agreement_with_litert"] >= 0.98 and res["decision_agreement_with_litert"] >= 0.95
        assert res["c_core_matches_python_scheduler"] == 1.0


def test_densenet_qat_export_is_refused_clearly(dense_export):
    from ddi_tf.deploy.calibrate import calibrate_edges
    from ddi_tf.deploy.pieces import ExportError, build_piece_models

    workdir, _, _, data, _ = dense_export
    cfg, _, model = export_lib.load_trained(workdir)
    mean, std = data_lib.normalization_for("cifar10")
    ranges, _ = calibrate_edges(cfg, model, data.x_train[:16], mean, std)
    with pytest.raises(ExportError, match="QAT export of DenseNet"):
        build_piece_models(cfg, model, ranges, mean, std, inner={})


def test_static_densenet_exports_and_runs_on_tflm(tmp_path_factory):
    """The static DenseNet (the gated one's backbone and baseline): one option a layer, no gates, the final exit."""
    import dataclasses

    from ddi_runtime import Scheduler

    root = tmp_path_factory.mktemp("densenet_static")
    static = dataclasses.replace(DENSE_MODEL, gate_type="none", exits=())
    workdir, out, manifest, data = train_and_export(static, root)
    summary = export_lib.export_summary(manifest, out)
    assert summary["float_tensors"] == 0 and summary["boundary_quantization_problems"] == 0
    assert [p["kind"] for p in manifest["pieces"]].count("gate") == 0
    cfg, _, model = export_lib.load_trained(workdir)
    mean, std = data_lib.normalization_for("cifar10")
    res = compare(model, cfg, out, data.x_test, mean, std)
    assert res["exit_agreement"][-1] >= 0.9, res
    sched = Scheduler(out, interpreter="litert", delegate="none")
    r = sched.run(data.x_test[0])
    assert r.macs == manifest["full_macs"] and not r.halted
    report = tmp_path_factory.mktemp("densenet_static_verify") / "verify.json"
    p = subprocess.run([sys.executable, str(MICRO / "verify.py"), f"--model_dir={out}", f"--data={root / 'test.npz'}",
                        "--limit=32", f"--json={report}"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(report.read_text())["agreement_with_litert"] >= 0.98
