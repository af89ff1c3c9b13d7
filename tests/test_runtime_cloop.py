"""The C per-sample loop of ddi_runtime.Scheduler (ddi_runtime._cloop around micro/ddi_sched.c) against its Python
loop, the reference: the same decisions, exits, predictions, costs, MACs, ``halted`` and exit logits, and the same
errors. Tests that need the extension skip when it was not built."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ddi_tf  # noqa: F401
from ddi_runtime import BudgetError, Scheduler, cloop
from ddi_runtime.interpreters import RuntimeSetupError

REPO = Path(__file__).resolve().parents[1]
needs_cloop = pytest.mark.skipif(not cloop.available(), reason="the C loop ddi_runtime._cloop is not built "
                                 f"({cloop.IMPORT_ERROR}): pip install -e ./tflite with a C compiler")
KINDS = ("macs", "uj", "ms")


def same(a, b) -> bool:
    """Two Results agree on everything but their timings."""
    return ((a.pred, a.exit, a.cost, a.macs, a.decisions, a.halted) == (b.pred, b.exit, b.cost, b.macs, b.decisions,
                                                                          b.halted)
            and len(a.exit_logits) == len(b.exit_logits)
            and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a.exit_logits, b.exit_logits,
                                                                                strict=True)))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tflite"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def latency_json(exported, tmp_path_factory) -> str:
    """A made-up latency table for the tiny export (fractional milliseconds, no profiling: nothing is timed)."""
    rng = np.random.default_rng(7)
    pieces = {p["name"]: {o["name"]: 0.0 if o["identity"] else float(o["macs"]) * 1e-7 * rng.uniform(0.5, 2.0)
                          for o in p["options"]} for p in exported[2]["pieces"]}
    path = tmp_path_factory.mktemp("latency") / "latency.json"
    path.write_text(json.dumps({"unit": "ms", "pieces": pieces}))
    return str(path)


@pytest.fixture(scope="module")
def c_sched(exported, latency_json):
    if not cloop.available():
        pytest.skip("the C loop ddi_runtime._cloop is not built")
    return Scheduler(exported[1], interpreter="litert", delegate="none", latency_table=latency_json, loop="c")


@pytest.fixture(scope="module")
def py_sched(exported, latency_json):
    return Scheduler(exported[1], interpreter="litert", delegate="none", latency_table=latency_json, loop="python")


def _budget(sched: Scheduler, kind: str, how: str, frac: float) -> float:
    lo = sched.cheapest_answer(kind)
    hi = sum(max(c) for c in sched.costs(kind)[0])
    return {"inf": math.inf, "cheapest": lo, "above": math.nextafter(lo, math.inf), "below": math.nextafter(lo, 0.0),
            "near": lo * (1.0 + 1e-9 * frac), "under": lo * (0.5 + 0.5 * frac),
            "range": lo + 1.2 * frac * (hi - lo)}[how]


@needs_cloop
@settings(max_examples=150, deadline=None)
@given(idx=st.integers(0, 127), kind=st.sampled_from(KINDS),
       how=st.sampled_from(["inf", "cheapest", "above", "below", "near", "under", "range", "range", "range"]),
       frac=st.floats(0.0, 1.0),
       thresholds=st.one_of(st.none(), st.floats(0.0, 1.0), st.just(1.0), st.just(1.5),
                            st.lists(st.floats(0.0, 1.2), min_size=1, max_size=4)),
       defer=st.booleans())
def test_c_loop_gives_the_python_loops_results(exported, c_sched, py_sched, idx, kind, how, frac, thresholds, defer):
    assert c_sched.loop == "c" and py_sched.loop == "python"
    img = exported[3].x_test[idx]
    budget = _budget(c_sched, kind, how, frac)
    n = c_sched.num_exits
    th = (thresholds + [1.5] * n)[:n] if isinstance(thresholds, list) else thresholds  # one per exit
    plan = c_sched.costs(kind)
    got = c_sched.run(img, budget, kind, th, plan, defer)
    want = c_sched.run_python(img, budget, kind, th, plan, defer)
    assert same(got, want), (got, want)
    assert same(py_sched.run(img, budget, kind, th, None, defer), want)  # (plan=None: each computes its own)
    assert isinstance(got.latency_ms, float) and 0.0 <= got.invoke_ms <= got.latency_ms + 1e-6


@needs_cloop
def test_thresholds_at_the_exits_own_confidences(exported, c_sched):
    """A threshold equal to an exit's confidence stops there (>=), one ulp above does not; deferred exits too."""
    data = exported[3]
    plan = c_sched.costs("macs")
    exits = [p["options"][0] for p in c_sched.manifest["pieces"] if p["kind"] == "exit"]
    stopped = 0
    for idx in range(16):
        free = c_sched.run_python(data.x_test[idx], math.inf, "macs", None, plan)
        for option, logits in zip(exits[:-1], free.exit_logits[:-1], strict=True):
            conf = c_sched._confidence(option, logits)
            for th in (conf, math.nextafter(conf, 2.0), math.nextafter(conf, 0.0)):
                for defer in (False, True):
                    got = c_sched.run(data.x_test[idx], math.inf, "macs", th, plan, defer)
                    want = c_sched.run_python(data.x_test[idx], math.inf, "macs", th, plan, defer)
                    assert same(got, want), (idx, th, defer)
                    stopped += want.exit < c_sched.num_exits - 1
    assert stopped > 0  # some thresholds did stop early


@needs_cloop
@pytest.mark.parametrize("value", [math.nan, -math.inf, 0.0, -0.0, -3.0])
def test_c_loop_refuses_the_same_bad_budgets(exported, c_sched, value):
    img = exported[3].x_test[0]
    for run in (c_sched.run, c_sched.run_python):
        with pytest.raises(BudgetError, match="positive"):
            run(img, value, "uj")


@needs_cloop
@pytest.mark.parametrize("image", [np.zeros((32, 32, 1), np.uint8), np.zeros((32, 32, 3), np.float32),
                                   np.zeros((3, 32, 32), np.uint8), np.zeros((1, 32, 32, 3), np.uint8)])
def test_c_loop_refuses_the_same_images(c_sched, image):
    messages = []
    for run in (c_sched.run, c_sched.run_python):
        with pytest.raises(ValueError, match=r"expected a \(32, 32, 3\) uint8 image") as e:
            run(image, 1e9, "macs")
        messages.append(str(e.value))
    assert messages[0] == messages[1]


@needs_cloop
def test_c_loop_below_the_cheapest_answer_and_other_errors(exported, c_sched):
    img = exported[3].x_test[1]
    low = c_sched.cheapest_answer("macs") * 0.5
    with pytest.raises(BudgetError, match="cheapest"):
        c_sched.check_budget("macs", low)
    assert same(c_sched.run(img, low, "macs"), c_sched.run_python(img, low, "macs"))  # (halted, no answer)
    with pytest.raises(BudgetError, match="unknown budget kind"):
        c_sched.run(img, 1e9, "joules")
    for run in (c_sched.run, c_sched.run_python):
        with pytest.raises(ValueError):
            run(img, 1e9, "macs", [0.5] * (c_sched.num_exits + 1))
    # a plan whose reserves are not Scheduler.costs' runs on the Python loop, with its results
    costs, reserves = c_sched.costs("macs")
    odd = (costs, [r * 0.5 for r in reserves])
    assert same(c_sched.run(img, 3e6, "macs", None, odd), c_sched.run_python(img, 3e6, "macs", None, odd))
    plain = Scheduler(c_sched.model_dir, interpreter="litert", delegate="none")  # no latency table
    with pytest.raises(BudgetError, match="profile"):
        plain.run(img, 1.0, "ms")


@needs_cloop
def test_direct_cpp_invoke_on_tflite_runtime_in_its_own_process(exported):
    """tflite-runtime exports tflite::impl::Interpreter::Invoke: the C loop calls it directly (XNNPACK too)."""
    code = """if True:
        import json, math, sys
        import numpy as np
        from ddi_runtime import Scheduler
        data = np.load(sys.argv[2])
        out = {}
        for delegate in ("none", "default"):
            s = Scheduler(sys.argv[1], interpreter="tflite_runtime", delegate=delegate, loop="c")
            bad = n = 0
            for kind in ("macs", "uj"):
                plan = s.costs(kind)
                lo, hi = s.cheapest_answer(kind), sum(max(c) for c in plan[0])
                for i, x in enumerate(data["x"][:32]):
                    b = [math.inf, lo, lo + (i / 32) * (hi - lo)][i % 3]
                    for th in (None, 0.6):
                        for d in (False, True):
                            a, r = s.run(x, b, kind, th, plan, d), s.run_python(x, b, kind, th, plan, d)
                            n += 1
                            bad += (a.pred, a.exit, a.cost, a.macs, a.decisions, a.halted) != (
                                r.pred, r.exit, r.cost, r.macs, r.decisions, r.halted) or len(a.exit_logits) != len(
                                r.exit_logits) or any((p != q).any() for p, q in zip(a.exit_logits, r.exit_logits))
            out[delegate] = {"direct": s._cloop.direct, "mismatches": int(bad), "runs": n}
        print(json.dumps(out))
    """
    res = subprocess.run([sys.executable, "-c", code, exported[1], str(Path(exported[1]).parent / "test.npz")],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for delegate, r in out.items():
        assert r["mismatches"] == 0 and r["runs"] == 256, (delegate, r)
        assert r["direct"] > 0, f"tflite-runtime's Invoke was not called directly ({delegate}): {r}"


@needs_cloop
def test_eval_json_says_which_loop_ran(exported):
    npz = str(Path(exported[1]).parent / "test.npz")
    runs = {}
    for loop in ("auto", "python"):
        res = subprocess.run([sys.executable, "-m", "ddi_runtime", "eval", f"--model_dir={exported[1]}",
                              f"--data={npz}", "--budget_macs=6000000", "--threshold=0.7", "--delegate=none",
                              "--interpreter=litert", "--limit=32", f"--loop={loop}", "--json"],
                             capture_output=True, text=True, env=_env(), timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        runs[loop] = json.loads(res.stdout[res.stdout.index("{"):])
    assert runs["auto"]["loop"] == "c" and runs["python"]["loop"] == "python"
    for key in ("accuracy", "mean_macs", "max_macs", "mean_macs", "over_budget", "exit_histogram"):
        assert runs["auto"][key] == runs["python"][key], key


def test_loop_choice_and_the_one_line_notice(exported, monkeypatch, caplog):
    """Without the extension: ``auto`` runs the Python loop and says so once; ``c`` is an error. Built or not."""
    with pytest.raises(RuntimeSetupError, match="unknown loop"):
        Scheduler(exported[1], interpreter="litert", loop="fortran")
    monkeypatch.setattr(cloop, "_cloop", None)
    monkeypatch.setattr(cloop, "IMPORT_ERROR", "ImportError: not built")
    monkeypatch.setattr(cloop, "_noticed", False)
    with caplog.at_level(logging.WARNING, logger="ddi_runtime"):
        a = Scheduler(exported[1], interpreter="litert", delegate="none")
        b = Scheduler(exported[1], interpreter="litert", delegate="none", loop="auto")
    assert a.loop == b.loop == "python"
    notices = [r.getMessage() for r in caplog.records if "C loop" in r.getMessage()]
    assert len(notices) == 1 and "not built" in notices[0] and "\n" not in notices[0], notices
    with pytest.raises(RuntimeSetupError, match="not built"):
        Scheduler(exported[1], interpreter="litert", loop="c")
    img = exported[3].x_test[2]
    assert same(a.run(img, 5e6, "macs", 0.8), a.run_python(img, 5e6, "macs", 0.8))


@needs_cloop
def test_interpreters_the_c_loop_cannot_drive_fall_back(exported):
    """set_interpreters with two options on one interpreter (shared buffers): auto falls back, c refuses."""
    s = Scheduler(exported[1], interpreter="litert", delegate="none")
    assert s.loop == "c"
    shared = dict(s.interps)
    keys = list(shared)
    shared[keys[1]] = shared[keys[0]]
    s.set_interpreters(shared)
    assert s.loop == "python"
    s.set_interpreters(dict(Scheduler(exported[1], interpreter="litert", delegate="none").interps))
    assert s.loop == "c"
    strict = Scheduler(exported[1], interpreter="litert", delegate="none", loop="c")
    with pytest.raises(RuntimeSetupError, match="share"):
        strict.set_interpreters(shared)
