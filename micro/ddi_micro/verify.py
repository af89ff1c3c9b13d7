"""The checks behind ``python micro/verify.py`` (its docstring says what they are): the export's pieces under
the TFLM interpreter and LiteRT's reference kernels, driven by the C decision core through ctypes."""

from __future__ import annotations

import ctypes as C
import json
import math
import os
import re
import subprocess
import tempfile
import time

import numpy as np

from ddi_micro import gen
from ddi_runtime.data import load_npz  # numpy only, like the board runtime
from ddi_runtime.latency import load_latency_table
from ddi_runtime.manifest import ModelError

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # micro/: the C core, its Makefile and build/
LIB = os.path.join(HERE, "build", "libddi_sched.so")


KINDS = {"fixed": 0, "gate": 1, "block": 2, "exit": 3}
COST_MACS, COST_ENERGY_UJ, COST_LATENCY_US = 0, 1, 2
# verify()'s budget kinds: the C core's cost kind and the Python scheduler's (us: in ms, the budget / 1000).
BUDGET_KINDS = {"macs": (COST_MACS, "macs"), "uj": (COST_ENERGY_UJ, "uj"), "us": (COST_LATENCY_US, "ms")}
DONE = -1
BEGIN_ERRORS = {-1: "DDI_ERR_ARG: bad table or cost kind", -2: "DDI_ERR_BUDGET: below the cheapest way to an answer",
                -3: "DDI_ERR_NO_EXIT", -6: "DDI_ERR_BAD_BUDGET: NaN, zero or negative"}

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


# --- ctypes mirror of ddi_sched.h ------------------------------------------------------------------------------
class Quant(C.Structure):
    _fields_ = [("name", C.c_char_p), ("scale", C.c_double), ("zero_point", C.c_int32)]


class Option(C.Structure):
    _fields_ = [("name", C.c_char_p), ("model", C.c_void_p), ("model_len", C.c_uint32), ("arena_bytes", C.c_uint32),
                ("identity", C.c_int32), ("input_edge", C.c_int32), ("output_edge", C.c_int32),
                ("num_outputs", C.c_int32), ("out_scale", C.c_double), ("out_zero_point", C.c_int32),
                ("macs", C.c_double), ("energy_uj", C.c_double), ("latency_us", C.c_double)]


class Piece(C.Structure):
    _fields_ = [("name", C.c_char_p), ("kind", C.c_int32), ("index", C.c_int32), ("num_options", C.c_int32),
                ("options", C.POINTER(Option))]


class Model(C.Structure):
    _fields_ = [("num_pieces", C.c_int32), ("num_exits", C.c_int32), ("num_classes", C.c_int32),
                ("num_edges", C.c_int32), ("pieces", C.POINTER(Piece)), ("edges", C.POINTER(Quant)),
                ("reserves_macs", C.POINTER(C.c_double)), ("reserves_energy_uj", C.POINTER(C.c_double)),
                ("num_thresholds", C.c_int32), ("threshold_names", C.POINTER(C.c_char_p)),
                ("thresholds", C.POINTER(C.c_double)), ("arena_bytes", C.c_uint32),
                ("max_boundary_bytes", C.c_uint32)]


class Action(C.Structure):
    _fields_ = [("piece", C.c_int32), ("option", C.c_int32), ("kind", C.c_int32), ("identity", C.c_int32),
                ("model", C.c_void_p), ("model_len", C.c_uint32), ("keep", C.c_int32), ("from_kept", C.c_int32)]


class Result(C.Structure):
    _fields_ = [("pred", C.c_int32), ("exit", C.c_int32), ("halted", C.c_int32), ("num_decisions", C.c_int32),
                ("spent", C.c_double), ("macs", C.c_double)]


def load_lib() -> C.CDLL:
    src = [os.path.join(HERE, f) for f in ("ddi_sched.c", "ddi_sched.h")]
    if not os.path.exists(LIB) or any(os.path.getmtime(f) > os.path.getmtime(LIB) for f in src):
        subprocess.run(["make", "-s", "-C", HERE, "lib"], check=True, stdout=subprocess.DEVNULL)
    lib = C.CDLL(LIB)
    lib.ddi_sizeof.restype = C.c_uint32
    lib.ddi_sizeof.argtypes = [C.c_int32]
    for what, cls in ((1, Model), (2, Piece), (3, Option), (4, Quant), (5, Action), (6, Result)):
        if lib.ddi_sizeof(what) != C.sizeof(cls):
            raise RuntimeError(f"ctypes mirror of {cls.__name__} ({C.sizeof(cls)} bytes) does not match "
                               f"ddi_sched.h ({lib.ddi_sizeof(what)} bytes)")
    lib.ddi_begin.argtypes = [C.c_void_p, C.POINTER(Model), C.c_int32, C.c_double, C.POINTER(C.c_double)]
    lib.ddi_begin.restype = C.c_int
    lib.ddi_set_defer_exits.argtypes = [C.c_void_p, C.c_int32]
    lib.ddi_set_defer_exits.restype = C.c_int
    lib.ddi_next.argtypes = [C.c_void_p]
    lib.ddi_next.restype = Action
    for f in (lib.ddi_report_gate, lib.ddi_report_exit):
        f.argtypes = [C.c_void_p, C.POINTER(C.c_int8), C.c_int32]
        f.restype = C.c_int
    lib.ddi_get_result.argtypes = [C.c_void_p]
    lib.ddi_get_result.restype = Result
    lib.ddi_decision.argtypes = [C.c_void_p, C.c_int32]
    lib.ddi_decision.restype = C.c_int32
    lib.ddi_cheapest_answer.argtypes = [C.POINTER(Model), C.c_int32, C.POINTER(C.c_double)]
    lib.ddi_cheapest_answer.restype = C.c_int
    return lib


class Core:
    """The C decision core over a table built from generated.json (the numbers ddi_model_table.c holds)."""

    def __init__(self, lib: C.CDLL, table: dict):
        self.lib, self.table = lib, table
        self._keep = []
        pieces = (Piece * len(table["pieces"]))()
        for i, p in enumerate(table["pieces"]):
            opts = (Option * len(p["options"]))()
            for k, o in enumerate(p["options"]):
                opts[k] = Option(o["name"].encode(), None, o["bytes"], o["arena_bytes"], int(o["identity"]),
                                 o["input_edge"], o["output_edge"], o["num_outputs"], o["out_scale"],
                                 o["out_zero_point"], o["macs"], o["energy_uj"], o["latency_us"])
            self._keep.append(opts)
            pieces[i] = Piece(p["name"].encode(), KINDS[p["kind"]], p["index"], len(p["options"]), opts)
        edges = (Quant * max(1, len(table["edges"])))(*[Quant(e["name"].encode(), e["scale"], e["zero_point"])
                                                        for e in table["edges"]])
        self._keep += [pieces, edges]
        self.model = Model(len(table["pieces"]), table["num_exits"], table["num_classes"], len(table["edges"]),
                           pieces, edges, None, None, 0, None, None, table["arena_bytes"],
                           table["max_boundary_bytes"])
        self.state = C.create_string_buffer(lib.ddi_sizeof(0))

    def cheapest(self, kind: int) -> float:
        out = C.c_double()
        if self.lib.ddi_cheapest_answer(C.byref(self.model), kind, C.byref(out)) != 0:
            raise ValueError("the table has no exit")
        return out.value

    def run(self, image: np.ndarray, invoke, budget: float, kind: int, thresholds, defer_exits: bool = False) -> dict:
        """One sample; ``invoke(piece, option, x) -> y`` runs a piece option (int8 in, int8 out)."""
        th = None if thresholds is None else (C.c_double * len(thresholds))(*thresholds)
        rc = self.lib.ddi_begin(self.state, C.byref(self.model), kind, budget, th)
        if rc != 0:
            raise ValueError(f"ddi_begin failed with {rc} ({BEGIN_ERRORS.get(rc, 'see ddi_sched.h')}, budget {budget})")
        if defer_exits and self.lib.ddi_set_defer_exits(self.state, 1) != 0:
            raise RuntimeError("ddi_set_defer_exits failed")
        x = (image.astype(np.int16) - 128).astype(np.int8)[None]
        kept = None
        while True:
            a = self.lib.ddi_next(self.state)
            if a.piece == DONE:
                break
            if a.piece < 0:
                raise RuntimeError(f"ddi_next misuse ({a.piece})")
            p = self.table["pieces"][a.piece]
            o = p["options"][a.option]
            if a.keep:  # a deferred exit: keep its input (the firmware copies the boundary buffer)
                kept = x.copy()
                continue
            if o["identity"]:
                continue
            y = invoke(p["name"], o["name"], kept if a.from_kept else x)
            if a.kind in (1, 3):
                logits = np.ascontiguousarray(y.reshape(-1), dtype=np.int8)
                ptr = logits.ctypes.data_as(C.POINTER(C.c_int8))
                report = self.lib.ddi_report_gate if a.kind == 1 else self.lib.ddi_report_exit
                if report(self.state, ptr, logits.size) != 0:
                    raise RuntimeError("report failed")
            else:
                x = y
        r = self.lib.ddi_get_result(self.state)
        return {"pred": r.pred, "exit": r.exit, "halted": bool(r.halted), "spent": r.spent, "macs": r.macs,
                "decisions": [self.lib.ddi_decision(self.state, i) for i in range(r.num_decisions)]}


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
