"""micro/: the C decision core, the generated TFLM sources and the TFLM verification (fast: host only)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

MICRO = Path(__file__).resolve().parents[1] / "micro"
sys.path.insert(0, str(MICRO))

from ddi_micro import gen  # noqa: E402


def _make(*args, check=True):
    return subprocess.run(["make", "-s", "-C", str(MICRO), *args], capture_output=True, text=True, check=check,
                          timeout=120)


def _verify(*args):
    return subprocess.run([sys.executable, str(MICRO / "verify.py"), *args], capture_output=True, text=True,
                          timeout=300)


def _fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


@pytest.fixture(scope="module")
def generated(exported, tmp_path_factory):
    _, export_dir, manifest, _ = exported
    out = tmp_path_factory.mktemp("micro") / "generated"
    table = gen.generate(export_dir, str(out))
    return export_dir, manifest, str(out), table


@pytest.fixture(scope="module")
def test_npz(exported):
    return os.path.join(os.path.dirname(exported[1]), "test.npz")


def test_c_unit_tests():
    r = _make("test", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"test_sched: \d+ checks, 0 failures", r.stdout), r.stdout


def test_cortex_m4_size():
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc is not installed (apt-get install gcc-arm-none-eabi)")
    r = _make("size", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    text = int(re.search(r"^\s*(\d+)\s+\d+\s+\d+\s+\d+\s+\w+\s+\S*ddi_sched", r.stdout, re.M).group(1))
    assert 0 < text < 8192


def test_generated_arrays_round_trip(generated):
    export_dir, manifest, out, table = generated
    assert gen.check_roundtrip(export_dir, out) == []
    for p in manifest["pieces"]:
        for o in p["options"]:
            if not o["identity"]:
                text = Path(out, f"{gen.option_key(p, o)}_model.cc").read_text()
                assert "GENERATED" in text and "alignas(16)" in text
    # a changed byte is caught
    key = next(o["key"] for p in table["pieces"] for o in p["options"] if not o["identity"])
    path = os.path.join(out, f"{key}_model.cc")
    original = Path(path).read_text()
    head, body = original.split("[] = {", 1)
    first = re.search(r"0x([0-9a-f]{2})", body)
    flipped = f"0x{int(first.group(1), 16) ^ 1:02x}"
    try:
        Path(path).write_text(head + "[] = {" + body[:first.start()] + flipped + body[first.end():])
        problems = gen.check_roundtrip(export_dir, out)
        assert len(problems) == 1 and "differs from" in problems[0] and path in problems[0]
    finally:
        Path(path).write_text(original)


def test_generated_table_compiles_and_matches(generated):
    export_dir, manifest, out, _ = generated
    r = _make("table", f"GEN={out}", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("option ")]
    want = [(p, o) for p in manifest["pieces"] for o in p["options"]]
    assert len(lines) == len(want)
    for line, (p, o) in zip(lines, want, strict=True):
        f = dict(kv.split("=") for kv in line.split()[3:])
        assert line.split()[1:3] == [p["name"], o["name"]]
        assert int(f["identity"]) == int(o["identity"])
        assert float(f["macs"]) == float(o["macs"])
        if not o["identity"]:
            data = Path(export_dir, o["file"]).read_bytes()
            assert int(f["len"]) == len(data) and int(f["fnv"], 16) == _fnv1a(data)
            assert int(f["arena"]) > 0
    assert r.stdout.rstrip().endswith("OK")  # C-recomputed reserves equal the exported ones


def test_verify_agrees_with_litert(generated, test_npz, tmp_path):
    export_dir, manifest, out, _ = generated
    report = tmp_path / "verify.json"
    r = _verify(f"--model_dir={export_dir}", f"--data={test_npz}", f"--generated={out}", f"--json={report}")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(report.read_text())
    assert res["examples"] > 0
    assert res["agreement_with_litert"] >= 0.99
    assert res["over_budget"] == 0
    assert res["missing_ops"] == {}
    assert res["c_core_matches_python_scheduler"] == 1.0
    assert res["arena_bytes"]["max"] == max(res["arena_bytes"]["per_piece"].values())
    assert res["flash_bytes"] == sum(o["bytes"] for p in manifest["pieces"] for o in p["options"]
                                     if not o["identity"])
    assert set(res["boards"]) >= {"arduino_nano_33_ble_sense", "stm32f746g_discovery", "stm32h743", "esp32_s3"}


def test_verify_under_budget_and_threshold(generated, test_npz, tmp_path):
    export_dir, manifest, out, _ = generated
    budget = (manifest["cheapest_answer_macs"] + manifest["full_macs"]) / 2
    report = tmp_path / "verify.json"
    r = _verify(f"--model_dir={export_dir}", f"--data={test_npz}", f"--generated={out}", "--limit=48",
                f"--budget_macs={budget}", "--threshold=0.5", f"--json={report}")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(report.read_text())
    assert res["over_budget"] == 0 and res["mean_spent"] <= budget
    assert res["agreement_with_litert"] >= 0.99
    assert res["c_core_matches_python_scheduler"] == 1.0
    r = _verify(f"--model_dir={export_dir}", f"--data={test_npz}", f"--generated={out}", "--budget_macs=1")
    assert r.returncode == 2 and "below the cheapest way to an answer" in r.stderr


def test_verify_deferred_exits_match_the_python_scheduler(generated, test_npz, tmp_path):
    export_dir, manifest, out, _ = generated
    for frac in (0.1, 0.5):  # binding budgets: deferred exits are kept, then answer or are superseded
        budget = manifest["cheapest_answer_macs"] + frac * (manifest["full_macs"] - manifest["cheapest_answer_macs"])
        report = tmp_path / f"verify_{frac}.json"
        r = _verify(f"--model_dir={export_dir}", f"--data={test_npz}", f"--generated={out}", "--limit=32",
                    f"--budget_macs={budget}", "--defer_exits", f"--json={report}")
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(report.read_text())
        assert res["defer_exits"] is True and res["over_budget"] == 0
        assert res["c_core_matches_python_scheduler"] == 1.0  # decisions, exit, cost and halting, sample by sample
        assert res["arena_bytes"]["kept_buffer"] == res["arena_bytes"]["boundary_buffer"] > 0


def test_missing_op_is_named(generated, test_npz, tmp_path):
    export_dir, manifest, out, _ = generated
    copy = tmp_path / "generated"
    shutil.copytree(out, copy)
    ops_h = copy / "ddi_ops.h"
    text = ops_h.read_text()
    dropped = "CONV_2D"
    assert f"X({dropped}," in text
    ops_h.write_text("".join(line for line in text.splitlines(True) if not line.lstrip().startswith(f"X({dropped},")))
    report = tmp_path / "verify.json"
    r = _verify(f"--model_dir={export_dir}", f"--data={test_npz}", f"--generated={copy}", "--limit=4",
                f"--json={report}")
    assert r.returncode == 1
    res = json.loads(report.read_text())
    users = [f"{p['name']}/{o['name']}" for p in manifest["pieces"] for o in p["options"]
             if not o["identity"] and dropped in o["ops"]]
    assert users and set(res["missing_ops"]) == set(users)
    assert all(dropped in ops for ops in res["missing_ops"].values())
    assert f"uses op(s) {dropped}" in r.stderr and users[0] in r.stderr


def _random_table(data) -> tuple[dict, list[str], list[list[float]], list[int]]:
    """A random DDI piece table (stem, then gate + block [+ exit] per block, ending in an exit) with integer
    MAC costs, and each piece's unbudgeted choice."""
    kinds, costs, chosen = ["fixed"], [[float(data.draw(st.integers(0, 1000)))]], [0]
    n_blocks = data.draw(st.integers(1, 6))
    for b in range(n_blocks):
        n = data.draw(st.integers(1, 4))
        kinds += ["gate", "block"]
        costs += [[float(data.draw(st.integers(0, 50)))],
                  sorted(float(v) for v in data.draw(st.lists(st.integers(0, 5000), min_size=n, max_size=n)))]
        chosen += [0, data.draw(st.integers(0, n - 1))]
        if b == n_blocks - 1 or data.draw(st.booleans()):
            kinds.append("exit")
            costs.append([float(data.draw(st.integers(1, 300)))])
            chosen.append(0)
    pieces, counters = [], {}
    for kind, c in zip(kinds, costs, strict=True):
        index = counters.get(kind, 0)
        counters[kind] = index + 1
        options = [{"name": f"o{k}", "bytes": 4, "arena_bytes": 0, "identity": False, "input_edge": -1,
                    "output_edge": -1, "num_outputs": 4, "out_scale": 0.1, "out_zero_point": 0, "macs": v,
                    "energy_uj": 0.0, "latency_us": 0.0} for k, v in enumerate(c)]
        pieces.append({"name": f"{kind}{index}", "kind": kind, "index": index, "options": options})
    table = {"pieces": pieces, "edges": [], "num_exits": counters["exit"], "num_classes": 4, "arena_bytes": 0,
             "max_boundary_bytes": 0}
    return table, kinds, costs, chosen


@settings(max_examples=300, deadline=None)
@given(data=st.data(), defer=st.booleans())
def test_c_core_equals_the_reference_rule_on_random_tables(data, defer):
    """The C core and ddi_tf.evaluation.policies.simulate_budget (the rule the runtime and the Keras policy follow)
    take the same decisions, spend the same and answer from the same exit, with and without deferred exits."""
    import numpy as np
    from ddi_micro import core as c_core

    from ddi_tf.core.costs import CostTable
    from ddi_tf.evaluation import policies

    table, kinds, costs, chosen = _random_table(data)
    reserves = list(CostTable("macs", tuple(p["name"] for p in table["pieces"]), tuple(kinds),
                              tuple(map(tuple, costs))).reserves())
    core = c_core.Core(c_core.load_lib(), table)
    cheapest = core.cheapest(c_core.COST_MACS)
    full = sum(max(c) for c in costs)
    budget = float(data.draw(st.integers(int(cheapest), int(full) + 1)))
    want = {p["name"]: chosen[i] for i, p in enumerate(table["pieces"])}
    gate_of = {}  # a gate's answer: the option its block (the next piece) wants
    for i, p in enumerate(table["pieces"]):
        if p["kind"] == "gate":
            gate_of[p["name"]] = (want[table["pieces"][i + 1]["name"]], len(costs[i + 1]))

    def invoke(piece, option, x):
        if piece in gate_of:
            k, n = gate_of[piece]
            return np.array([[100 if j == k else -100 for j in range(n)]], np.int8)
        if piece.startswith("exit"):
            return np.array([[0, 0, 1, 0]], np.int8)
        return x

    c = core.run(np.zeros((32, 32, 3), np.uint8), invoke, budget, c_core.COST_MACS, None, defer)
    ran, spent, exits = policies.simulate_budget(costs, kinds, reserves, chosen, budget, defer_exits=defer)
    assert spent <= budget and c["spent"] == spent
    assert c["exit"] == exits - 1 >= 0
    assert c["decisions"] == [r for r, k in zip(ran, kinds, strict=True) if k == "block" and r >= 0]
    if defer:  # after the first exit, the budget never cuts a block down to a skip its gate did not choose
        first = kinds.index("exit")
        assert all(not (r == 0 < w) for r, w, k in zip(ran[first:], chosen[first:], kinds[first:], strict=True)
                   if k == "block")


@pytest.mark.parametrize("value", ["nan", "0", "-1", "-inf"])
def test_verify_refuses_nan_and_non_positive_budgets(generated, test_npz, value):
    export_dir, _, out, _ = generated
    r = _verify(f"--model_dir={export_dir}", f"--data={test_npz}", f"--generated={out}", f"--budget_macs={value}")
    assert r.returncode == 2 and "--budget_macs" in r.stderr and "positive" in r.stderr and "inf: no budget" in r.stderr


def test_c_core_refuses_nan_and_non_positive_budgets(generated):
    import math

    import numpy as np
    from ddi_micro import core as c_core

    core = c_core.Core(c_core.load_lib(), generated[3])
    for value in (math.nan, 0.0, -1.0, -math.inf):
        with pytest.raises(ValueError, match="DDI_ERR_BAD_BUDGET"):
            core.run(np.zeros((32, 32, 3), np.uint8), None, value, c_core.COST_MACS, None)


def test_verify_refuses_labels_outside_the_classes(generated, exported, tmp_path):
    import numpy as np

    export_dir, _, out, _ = generated
    data = exported[3]
    y = data.y_test[:8].copy()
    y[2] = 10
    np.savez(tmp_path / "bad.npz", x=data.x_test[:8], y=y)
    r = _verify(f"--model_dir={export_dir}", f"--data={tmp_path / 'bad.npz'}", f"--generated={out}")
    assert r.returncode == 2 and "y[2] = 10 is outside 0..9" in r.stderr, r.stderr[-2000:]


def test_one_manifest_version_and_gen_refuses_edited_macs(exported, tmp_path):
    import ddi_runtime.manifest
    from ddi_tf.deploy import export as export_lib

    assert gen.MANIFEST_VERSION == ddi_runtime.manifest.MANIFEST_VERSION == export_lib.MANIFEST_VERSION
    out_dir = shutil.copytree(exported[1], tmp_path / "m")
    manifest = json.loads((out_dir / "manifest.json").read_text())
    manifest["pieces"][0]["options"][0]["macs"] += 1
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(gen.GenError, match="stem/run is listed at"):
        gen.generate(str(out_dir), str(tmp_path / "generated"))


@pytest.fixture(scope="module")
def tflm_latency(generated, tmp_path_factory):
    """A latency table of the export's pieces on the TFLM interpreter (``verify.py --profile``, 2 repeats)."""
    export_dir, _, out, _ = generated
    path = tmp_path_factory.mktemp("latency") / "latency_tflm.json"
    r = _verify(f"--model_dir={export_dir}", "--profile", "--repeats=2", f"--generated={out}", f"--out={path}")
    assert r.returncode == 0, r.stdout + r.stderr
    return str(path), r.stdout


def test_profile_writes_a_latency_table(generated, tflm_latency):
    from ddi_runtime.latency import load_latency_table

    _, manifest, _, _ = generated
    path, stdout = tflm_latency
    ms = load_latency_table(path, manifest)  # every piece option of the export, valid latencies
    raw = json.loads(Path(path).read_text())
    assert raw["unit"] == "ms" and raw["interpreter"] == "tflite_micro" and raw["repeats"] == 2
    assert "ratios" in raw["note"]
    for p in manifest["pieces"]:
        for o in p["options"]:
            t = ms[(p["name"], o["name"])]
            assert t == 0.0 if o["identity"] else t > 0.0
    lines = [line for line in stdout.splitlines() if line.endswith(" ms")]
    assert len(lines) == sum(len(p["options"]) for p in manifest["pieces"])
    times = [float(line.split()[-2]) for line in lines]
    assert times == sorted(times, reverse=True)
    assert f"wrote {path}" in stdout


def test_verify_under_a_latency_budget(generated, test_npz, tflm_latency, tmp_path):
    from ddi_runtime.latency import load_latency_table

    export_dir, manifest, out, _ = generated
    path, _ = tflm_latency
    ms = load_latency_table(path, manifest)
    margin = 0.1
    costs = [[ms[(p["name"], o["name"])] * (1 + margin) * 1000 for o in p["options"]] for p in manifest["pieces"]]
    first_exit = next(i for i, p in enumerate(manifest["pieces"]) if p["kind"] == "exit")
    cheapest = sum(min(c) for c in costs[:first_exit + 1])
    full = sum(max(c) for c in costs)
    budget = (cheapest + full) / 2
    report = tmp_path / "verify.json"
    r = _verify(f"--model_dir={export_dir}", f"--data={test_npz}", f"--generated={out}", "--limit=24",
                f"--budget_us={budget}", f"--latency_table={path}", f"--latency_margin={margin}",
                f"--json={report}")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(report.read_text())
    assert res["budget_kind"] == "us" and res["budget"] == budget
    assert res["cheapest_answer"] == pytest.approx(cheapest, rel=1e-9)
    assert res["over_budget"] == 0 and res["mean_spent"] <= budget
    assert res["agreement_with_litert"] >= 0.99
    assert res["c_core_matches_python_scheduler"] == 1.0
    # the given generated dir (no latency table) was not reused and is left as it was
    assert json.loads(Path(out, "generated.json").read_text())["latency_table"] is None


def test_latency_budget_needs_a_latency_table(generated, test_npz):
    export_dir, _, out, _ = generated
    r = _verify(f"--model_dir={export_dir}", f"--data={test_npz}", f"--generated={out}", "--budget_us=1000")
    assert r.returncode == 2 and "--budget_us needs --latency_table" in r.stderr and "--profile" in r.stderr
    r = _verify(f"--model_dir={export_dir}", f"--generated={out}", "--budget_us=1000")
    assert r.returncode == 2 and "--data" in r.stderr
