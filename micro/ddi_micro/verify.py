"""The checks behind ``python micro/verify.py`` (its docstring says what they are): the export's pieces under
the TFLM interpreter and LiteRT's reference kernels, driven by the C decision core through ctypes."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time

import numpy as np

from ddi_micro import gen
from ddi_micro.core import BUDGET_KINDS, Core, load_lib
from ddi_runtime.data import load_npz  # numpy only, like the board runtime
from ddi_runtime.latency import load_latency_table
from ddi_runtime.manifest import ModelError

# name: (RAM bytes, flash bytes, note). Whole on-chip SRAM / flash as the vendors state them.
BOARDS = {
    "arduino_nano_33_ble_sense": (256 * 1024, 1024 * 1024, "nRF52840: 256 KB SRAM, 1 MB flash"),
    "stm32f746g_discovery": (320 * 1024, 1024 * 1024, "STM32F746NG: 320 KB SRAM, 1 MB flash"),
    "stm32h743": (1024 * 1024, 2 * 1024 * 1024,
                  "STM32H743: 1 MB SRAM in several banks (largest contiguous: 512 KB AXI SRAM), 2 MB flash"),
    "esp32_s3": (512 * 1024, 8 * 1024 * 1024, "ESP32-S3: 512 KB SRAM, 8 MB external flash (module)"),
}
# What the verdict sets aside beside the models: TFLM + application code in flash, stack/heap/interpreter in RAM.
CODE_FLASH_ALLOWANCE = 128 * 1024
RAM_ALLOWANCE = 16 * 1024


# --- interpreters ------------------------------------------------------------------------------------------------
class TflmPieces:
    def __init__(self, model_dir: str, table: dict):
        from tflite_micro import runtime

        self.interps = {}
        for p in table["pieces"]:
            for o in p["options"]:
                if not o["identity"]:
                    with open(os.path.join(model_dir, o["file"]), "rb") as f:
                        buf = f.read()
                    self.interps[(p["name"], o["name"])] = runtime.Interpreter.from_bytes(
                        buf, arena_size=table["arena_bytes"])

    def __call__(self, piece: str, option: str, x: np.ndarray) -> np.ndarray:
        it = self.interps[(piece, option)]
        it.set_input(x, 0)
        it.invoke()
        return it.get_output(0)


class LiteRtPieces:
    def __init__(self, model_dir: str, table: dict):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.interps = {}
        for p in table["pieces"]:
            for o in p["options"]:
                if not o["identity"]:
                    it = Interpreter(model_path=os.path.join(model_dir, o["file"]), num_threads=1,
                                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
                    it.allocate_tensors()
                    self.interps[(p["name"], o["name"])] = (it, it.get_input_details()[0]["index"],
                                                            it.get_output_details()[0]["index"])

    def __call__(self, piece: str, option: str, x: np.ndarray) -> np.ndarray:
        it, i, o = self.interps[(piece, option)]
        it.set_tensor(i, x)
        it.invoke()
        return it.get_tensor(o)


def python_scheduler(model_dir: str, litert: LiteRtPieces, latency_table: str | None = None,
                     latency_margin: float = 0.1):
    """tflite/ddi_runtime's Scheduler on the same reference interpreters, or None if it cannot be imported."""
    try:
        from ddi_runtime.scheduler import Scheduler
    except ImportError:
        return None
    sched = Scheduler(model_dir, interpreter="litert", delegate="none", latency_table=latency_table,
                      latency_margin=latency_margin)
    sched.set_interpreters(dict(litert.interps))
    return sched


# --- ops ---------------------------------------------------------------------------------------------------------
def model_ops(path: str) -> list[str]:
    """Builtin op names a .tflite file uses (from its flatbuffer)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    with open(path, "rb") as f:
        m = fb.Model.GetRootAsModel(f.read(), 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    ops = set()
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        ops.add(names.get(code, f"BUILTIN_{code}"))
    return sorted(ops)


def resolver_ops(generated: str) -> list[str]:
    """The ops a generated ddi_ops.h registers."""
    with open(os.path.join(generated, "ddi_ops.h")) as f:
        text = f.read()
    return re.findall(r"^\s*X\((\w+),\s*\w+\)", text, re.M)


def missing_ops(model_dir: str, table: dict, registered: list[str]) -> dict:
    out = {}
    for p in table["pieces"]:
        for o in p["options"]:
            if not o["identity"]:
                lack = [op for op in model_ops(os.path.join(model_dir, o["file"])) if op not in registered]
                if lack:
                    out[f"{p['name']}/{o['name']}"] = lack
    return out


def board_fit(ram: int, flash: int) -> dict:
    out = {}
    for name, (b_ram, b_flash, note) in BOARDS.items():
        ram_ok = ram + RAM_ALLOWANCE <= b_ram
        flash_ok = flash + CODE_FLASH_ALLOWANCE <= b_flash
        out[name] = {"fits": ram_ok and flash_ok, "ram_ok": ram_ok, "flash_ok": flash_ok, "board_ram": b_ram,
                     "board_flash": b_flash, "numbers": note}
    return out


# --- latency ------------------------------------------------------------------------------------------------------
def _read_generated(gdir: str) -> dict | None:
    path = os.path.join(gdir, "generated.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _arenas(table: dict) -> dict:
    """{option key: arena bytes} of a generated table (``gen.generate(arenas=...)``: no re-measuring)."""
    return {o["key"]: o["arena_bytes"] for p in table["pieces"] for o in p["options"] if not o["identity"]}


def _same_latency(table: dict, model_dir: str, latency_table: str, latency_margin: float) -> bool:
    """Whether a generated table was made from this latency table with this margin: the basename and margin it
    records, and every option's latency_us equal to the table's ms x (1 + margin) x 1000 (a table profiled again
    into the same file has the same basename)."""
    if table.get("latency_table") != os.path.basename(latency_table) or table.get("latency_margin") != latency_margin:
        return False
    try:
        ms = load_latency_table(latency_table, gen.load_manifest(model_dir))
    except ModelError:
        return False  # (regenerating reports what is wrong with it)
    try:
        return all(o["latency_us"] == ms[(p["name"], o["name"])] * (1.0 + latency_margin) * 1000.0
                   for p in table["pieces"] for o in p["options"])
    except KeyError:
        return False


def profile(model_dir: str, repeats: int = 20, seed: int = 0, generated: str | None = None) -> dict:
    """Median wall-clock time (ms) of every piece option on the TFLM interpreter, as a latency table.

    Each non-identity piece option runs in its own TFLM interpreter with the generated shared arena (as
    ``TflmPieces`` does; the table is generated into a temporary directory, or read from ``generated`` when it
    holds a generated.json), on random int8 inputs of its input shape (``seed``). Round robin: every repeat times
    each option once (set_input + invoke + get_output), so that a drift in the machine's speed hits all options
    alike; 2 warm-up rounds first, then ``repeats`` timed rounds, and the median of each option's times.

    Returns the format of ``python -m ddi_runtime profile`` (``ddi_runtime.latency``): ``{"unit": "ms",
    "interpreter": "tflite_micro", "delegate", "repeats", "pieces": {piece: {option: ms}}, "note"}``, identity
    options 0.0, every piece and option of the manifest present; ``gen.generate(latency_table=...)`` turns it
    into the C table's ``latency_us`` for ``DDI_COST_LATENCY_US`` budgets. These are host timings of TFLM's
    reference kernels: their ratios, not their absolute values, carry over to a Cortex-M.
    """
    from tflite_micro import runtime

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    manifest = gen.load_manifest(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        table = _read_generated(generated) if generated else None
        if table is None:
            table = gen.generate(model_dir, os.path.join(tmp, "generated"))
    rng = np.random.default_rng(seed)
    jobs = []
    for p in manifest["pieces"]:
        for o in p["options"]:
            if o["identity"]:
                continue
            with open(os.path.join(model_dir, o["file"]), "rb") as f:
                it = runtime.Interpreter.from_bytes(f.read(), arena_size=table["arena_bytes"])
            x = rng.integers(-128, 128, size=tuple(it.get_input_details(0)["shape"]), dtype=np.int8)
            jobs.append(((p["name"], o["name"]), it, x, []))
    warmup = 2
    clock = time.perf_counter
    for r in range(warmup + repeats):
        for _, it, x, times in jobs:
            t0 = clock()
            it.set_input(x, 0)
            it.invoke()
            it.get_output(0)
            if r >= warmup:
                times.append(clock() - t0)
    measured = {key: float(1e3 * np.median(times)) for key, _, _, times in jobs}
    pieces = {p["name"]: {o["name"]: 0.0 if o["identity"] else measured[(p["name"], o["name"])]
                          for o in p["options"]} for p in manifest["pieces"]}
    return {"unit": "ms", "interpreter": "tflite_micro", "delegate": "reference kernels (x86 host)",
            "repeats": repeats, "pieces": pieces,
            "note": "host timings of TFLM's reference kernels (tflite_micro Python interpreter): their ratios, not "
                    "their absolute values, transfer to a Cortex-M (whose CMSIS-NN kernels differ again); "
                    "profile on the board for absolute budgets"}


def verify(model_dir: str, data: str, limit: int | None = None, budget: float = math.inf, kind: str = "macs",
           threshold: float | None = None, generated: str | None = None, defer_exits: bool = False,
           latency_table: str | None = None, latency_margin: float = 0.1) -> dict:
    """The checks of ``python micro/verify.py`` (its docstring), as a JSON-able report.

    ``kind``: ``macs``, ``uj`` or ``us`` (microseconds: the C core's DDI_COST_LATENCY_US, planned from
    ``latency_table`` x (1 + ``latency_margin``), e.g. a table from ``profile``; a ``us`` budget without one is a
    ValueError). For ``us``, a ``generated`` dir is reused only if it was generated from the same latency table
    and margin (else the table is generated again, into a temporary directory, with its measured arenas), and
    the Python scheduler runs in milliseconds (budget / 1000; its cost x 1000 must equal the C core's spent to
    a relative 1e-9). ``latency_table`` and ``latency_margin`` are unused for ``macs`` and ``uj``.
    """
    if kind not in BUDGET_KINDS:
        raise ValueError(f"unknown budget kind {kind!r}; valid: {', '.join(BUDGET_KINDS)}")
    latency = kind == "us"
    if latency and not latency_table:
        raise ValueError("a latency budget (us) needs a latency table: profile the pieces first with `python "
                         f"micro/verify.py --profile --model_dir={model_dir}` and pass --latency_table="
                         f"{os.path.join(model_dir, 'latency_tflm.json')}")
    with tempfile.TemporaryDirectory() as tmp:
        gdir = generated or os.path.join(tmp, "generated")
        if not latency:
            if generated is None or not os.path.exists(os.path.join(gdir, "generated.json")):
                gen.generate(model_dir, gdir)
        else:
            given = _read_generated(gdir) if generated else None
            if given is None:
                gen.generate(model_dir, gdir, latency_table=latency_table, latency_margin=latency_margin)
            elif not _same_latency(given, model_dir, latency_table, latency_margin):
                gdir = os.path.join(tmp, "generated")  # (the given dir is left as it is)
                gen.generate(model_dir, gdir, given["arena_margin"], latency_table, latency_margin,
                             arenas=_arenas(given))
        with open(os.path.join(gdir, "generated.json")) as f:
            table = json.load(f)
        registered = resolver_ops(gdir)
    manifest = gen.load_manifest(model_dir)
    lack = missing_ops(model_dir, table, registered)
    lib = load_lib()
    core = Core(lib, table)
    ckind, skind = BUDGET_KINDS[kind]
    cheapest = core.cheapest(ckind)
    if not budget > 0.0:  # (NaN included: it compares false with every cost)
        raise ValueError(f"budget {budget} {kind} is not a budget: it must be positive (inf: no budget)")
    if not budget >= cheapest:
        raise ValueError(f"budget {budget:g} {kind} is below the cheapest way to an answer ({cheapest:g})")
    thresholds = None if threshold is None else [threshold] * table["num_exits"]

    x, y = load_npz(data, limit or 0, table["num_classes"])  # (labels checked: a bad one is a ModelError)
    tflm, litert = TflmPieces(model_dir, table), LiteRtPieces(model_dir, table)
    if latency:
        sched = python_scheduler(model_dir, litert, latency_table, latency_margin)
    else:
        sched = python_scheduler(model_dir, litert)
    plan = sched.costs(skind) if sched else None
    rows = []
    for img in x:
        a = core.run(img, tflm, budget, ckind, thresholds, defer_exits)
        b = core.run(img, litert, budget, ckind, thresholds, defer_exits)
        row = {"tflm": a, "litert": b}
        if sched is not None:
            r = sched.run(img, budget / 1000.0 if latency else budget, skind, thresholds, plan=plan,
                          defer_exits=defer_exits)
            same_cost = (math.isclose(r.cost * 1000.0, b["spent"], rel_tol=1e-9) if latency
                         else r.cost == b["spent"])
            row["python_same"] = (r.pred == b["pred"] and r.exit == b["exit"] and same_cost
                                  and list(r.decisions) == b["decisions"] and r.halted == b["halted"])
        rows.append(row)
    n = len(rows)
    pa = np.array([r["tflm"]["pred"] for r in rows])
    pb = np.array([r["litert"]["pred"] for r in rows])
    over = sum(1 for r in rows for k in ("tflm", "litert") if r[k]["spent"] > budget)
    arena = {f"{p['name']}/{o['name']}": o["arena_bytes"] for p in table["pieces"] for o in p["options"]
             if not o["identity"]}
    ram = table["arena_bytes"] + table["max_boundary_bytes"] * (2 if defer_exits else 1)  # (+ the kept copy)
    exits = [r["tflm"]["exit"] for r in rows]
    result = {
        "model_dir": model_dir, "examples": n, "budget": None if math.isinf(budget) else budget,
        "budget_kind": kind, "cheapest_answer": cheapest, "threshold": threshold, "defer_exits": defer_exits,
        "accuracy": float(np.mean(pa == y)) if n else None,
        "accuracy_litert": float(np.mean(pb == y)) if n else None,
        "agreement_with_litert": float(np.mean(pa == pb)) if n else None,
        "exit_agreement_with_litert": float(np.mean([r["tflm"]["exit"] == r["litert"]["exit"] for r in rows]))
        if n else None,
        "decision_agreement_with_litert": float(np.mean([r["tflm"]["decisions"] == r["litert"]["decisions"]
                                                         for r in rows])) if n else None,
        "c_core_matches_python_scheduler": (float(np.mean([r["python_same"] for r in rows])) if n else None)
        if sched is not None else None,
        "over_budget": over, "halted": sum(r["tflm"]["halted"] for r in rows),
        "mean_spent": float(np.mean([r["tflm"]["spent"] for r in rows])) if n else None,
        "mean_macs": float(np.mean([r["tflm"]["macs"] for r in rows])) if n else None,
        "exit_histogram": {str(j): exits.count(j) for j in sorted(set(exits))},
        "full_macs": manifest["full_macs"],
        "arena_bytes": {"per_piece": arena, "max": table["arena_max_measured"], "margin": table["arena_margin"],
                        "shared_arena": table["arena_bytes"], "boundary_buffer": table["max_boundary_bytes"],
                        "kept_buffer": table["max_boundary_bytes"] if defer_exits else 0, "ram_needed": ram},
        "flash_bytes": table["flash_bytes"],
        "boards": board_fit(ram, table["flash_bytes"]),
        "board_allowances": {"ram": RAM_ALLOWANCE, "flash": CODE_FLASH_ALLOWANCE,
                             "note": "RAM needed = shared arena + boundary activation buffer (+ its kept copy with "
                                     "--defer_exits) + allowance (stack, interpreter); flash = model arrays + "
                                     "allowance (TFLM and application code)"},
        "resolver_ops": registered,
        "missing_ops": lack,
        "interpreters": {"tflm": "tflite_micro Python interpreter (reference kernels)",
                         "litert": "ai_edge_litert BUILTIN_REF"},
    }
    if latency:  # (only here: the macs and uj reports stay as they were)
        result["latency_table"] = latency_table
        result["latency_margin"] = latency_margin
    return result
