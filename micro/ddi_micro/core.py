"""The C decision core (``micro/ddi_sched.c``) from Python: a ctypes mirror of ``ddi_sched.h``, the library
(built with ``make -C micro lib`` when missing or older than its sources) and ``Core``, which runs one sample
through it with any piece interpreter."""

from __future__ import annotations

import ctypes as C
import os
import subprocess

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # micro/: the C core, its Makefile and build/
LIB = os.path.join(HERE, "build", "libddi_sched.so")


KINDS = {"fixed": 0, "gate": 1, "block": 2, "exit": 3}
COST_MACS, COST_ENERGY_UJ, COST_LATENCY_US = 0, 1, 2
# verify()'s budget kinds: the C core's cost kind and the Python scheduler's (us: in ms, the budget / 1000).
BUDGET_KINDS = {"macs": (COST_MACS, "macs"), "uj": (COST_ENERGY_UJ, "uj"), "us": (COST_LATENCY_US, "ms")}
DONE = -1
BEGIN_ERRORS = {-1: "DDI_ERR_ARG: bad table or cost kind", -2: "DDI_ERR_BUDGET: below the cheapest way to an answer",
                -3: "DDI_ERR_NO_EXIT", -6: "DDI_ERR_BAD_BUDGET: NaN, zero or negative"}


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
