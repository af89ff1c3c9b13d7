"""The C per-sample loop of ``Scheduler`` (the optional extension ``ddi_runtime._cloop``) and its Python side.

``Scheduler(loop="auto")`` runs samples through the C loop when the extension was built (``pip install ./tflite``
or ``pip install -e ./tflite`` with a C compiler, from a checkout that has ``micro/``) and the interpreters allow
it (int8 tensors, distinct buffers, an export ending with an exit); otherwise through its Python loop, with one
notice per process. ``loop="c"`` makes a missing C loop an error, ``loop="python"`` never uses it;
``Scheduler.loop`` says which one runs. The Python loop (``Scheduler.run_python``) stays the reference: the C loop
gives the same decisions, exits, predictions, costs, MACs, ``halted`` and exit logits (tests/test_runtime_cloop.py).

What runs in C: the decisions, which are ``micro/ddi_sched.c`` itself (the MCU's decision core, compiled into the
extension: one implementation of the budget rule), the cost accounting, the exit confidence, and the tensor
copies: each piece interpreter's input and output buffers are taken once (``interpreter.tensor(i)()``'s address,
stable after ``allocate_tensors``; a warm-up ``invoke`` first, so that a lazily applied delegate has settled
them), and the loop ``memcpy``'s the boundary tensor into the next piece's input and reads gate and exit logits
in place, with no per-piece ``set_tensor`` / ``get_tensor`` round trips through Python.

How a piece's kernels are called -- the choice, and why (no timing was done for it):

- directly, through the C++ ``tflite::impl::Interpreter::Invoke()`` on the pointer the interpreter wrapper gives
  (``_interpreter.interpreter()``), when the wrapper's shared library exports that symbol (tflite-runtime does;
  resolved with ``dlsym`` on the already loaded library, never a second copy). The GIL is released around the
  call, as the wrapper's own ``Invoke`` does. Not used for the Edge TPU delegate, whose outputs the Python
  wrapper may need to make readable after ``Invoke``.
- otherwise by calling back the interpreter's bound Python ``invoke`` method (LiteRT: its wrappers export no C++
  symbols, so its ``Invoke`` cannot be reached from C without its headers, which do not exist here; Edge TPU).
  The callback keeps the wrapper's own safety checks; everything else per sample still runs in C.

Both are chosen per interpreter, automatically (``DDI_CLOOP_INVOKE=python`` forces the callback everywhere).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import time
from typing import Any

import numpy as np

from ddi_runtime.interpreters import RuntimeSetupError

try:
    from ddi_runtime import _cloop
except ImportError as _e:  # not built: no compiler, or installed without micro/
    _cloop = None
    IMPORT_ERROR = f"{type(_e).__name__}: {_e}"
else:
    IMPORT_ERROR = ""

LOOPS = ("auto", "c", "python")
KINDS = {"fixed": 0, "gate": 1, "block": 2, "exit": 3}  # micro/ddi_sched.h ddi_kind; other kinds run as fixed
INVOKE_SYMBOLS = ("_ZN6tflite4impl11Interpreter6InvokeEv", "_ZN6tflite11Interpreter6InvokeEv")
IMAGE_BYTES = 32 * 32 * 3
log = logging.getLogger("ddi_runtime")
_noticed = False


class CLoopUnavailableError(RuntimeSetupError):
    """The C loop cannot run this scheduler (the reason is the message)."""


def available() -> bool:
    """Whether the extension ``ddi_runtime._cloop`` was built and imports."""
    return _cloop is not None


def notice_once(reason: str) -> None:
    """One line, once per process: the Python loop runs instead of the C loop, and why."""
    global _noticed
    if not _noticed:
        _noticed = True
        log.warning("ddi_runtime: the C loop is not used (%s); Scheduler runs its Python loop", reason)


def invoke_address(interp: Any) -> tuple[int, int] | None:
    """(address of the C++ ``Interpreter::Invoke``, the ``tflite::Interpreter*``) of a TFLite Python interpreter,
    or None when its wrapper library does not export the symbol (LiteRT) or gives no pointer."""
    wrapper = getattr(interp, "_interpreter", None)
    pointer = getattr(wrapper, "interpreter", None)
    path = getattr(sys.modules.get(type(wrapper).__module__), "__file__", None)
    if not callable(pointer) or not path or not hasattr(os, "RTLD_NOLOAD"):
        return None
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the copy already loaded, never another
    except OSError:
        return None
    for symbol in INVOKE_SYMBOLS:
        try:
            fn = getattr(lib, symbol)
        except AttributeError:
            continue
        address, me = ctypes.cast(fn, ctypes.c_void_p).value, int(pointer())
        return (address, me) if address and me else None
    return None


def _buffer(interp: Any, index: int) -> tuple[int, int]:
    """(address, bytes) of an int8 tensor's buffer; the numpy view is dropped at once (the wrapper refuses to
    invoke while one is alive)."""
    view = interp.tensor(index)()
    if view.dtype != np.int8 or not view.flags.c_contiguous:
        raise CLoopUnavailableError(f"tensor {index} is {view.dtype}, not a contiguous int8 tensor")
    out = (int(view.ctypes.data), int(view.nbytes))
    del view
    return out


def _runner(interp: Any, i: int, o: int, direct: bool) -> tuple:
    """The extension's runner tuple for one piece interpreter: (fn, self, invoke, owner, in, in bytes, out,
    out bytes)."""
    interp.invoke()  # warm-up: buffers are final after the first invoke, whatever delegate applies lazily
    (in_addr, in_bytes), (out_addr, out_bytes) = _buffer(interp, i), _buffer(interp, o)
    fn, me = (invoke_address(interp) if direct else None) or (None, None)
    return fn, me, interp.invoke, interp, in_addr, in_bytes, out_addr, out_bytes


def exit_confidence(logits: np.ndarray, scale: float, zero_point: int) -> float:
    """An exit's confidence: the max softmax of its dequantised int8 logits (numpy float64), the Python loop's
    rule (``Scheduler.run_python``)."""
    z = (logits.astype(np.float64) - zero_point) * scale
    e = np.exp(z - z.max())
    return float(e.max() / e.sum())


def _confidence(logits: bytes, scale: float, zero_point: int) -> float:
    """``exit_confidence``, asked by the C loop only where its own is within 1e-9 of the threshold: numpy's
    float64 exp may differ from libm's by an ulp, and the Python loop is the reference."""
    return exit_confidence(np.frombuffer(logits, np.int8), scale, zero_point)


class CLoop:
    """One scheduler's piece graph on the C loop; ``run`` returns Result fields, or None to run the Python loop."""

    def __init__(self, manifest: dict, interps: dict, delegate: str, num_exits: int):
        if _cloop is None:
            raise CLoopUnavailableError(f"the extension ddi_runtime._cloop is not built ({IMPORT_ERROR})")
        if "gate_state" in manifest:
            raise CLoopUnavailableError("rnn gates (an LSTM state carried between gate pieces) run on the Python "
                                        "loop only so far")
        direct = delegate != "edgetpu" and os.environ.get("DDI_CLOOP_INVOKE", "") != "python"
        pieces, runners, exit_sizes = [], [], set()
        try:
            for p in manifest["pieces"]:
                opts = []
                for o in p["options"]:
                    if o["identity"]:
                        opts.append((True, -1, float(o["macs"]), 0.0, 0))
                        continue
                    entry = interps.get((p["name"], o["name"]))
                    if entry is None:
                        raise CLoopUnavailableError(f"no interpreter for {p['name']}/{o['name']}")
                    runners.append(_runner(*entry, direct))
                    q = o.get("output") or {}
                    if p["kind"] == "exit":
                        exit_sizes.add(runners[-1][7])
                    opts.append((False, len(runners) - 1, float(o["macs"]), float(q.get("scale", 1.0)),
                                 int(q.get("zero_point", 0))))
                pieces.append((KINDS.get(p["kind"], 0), tuple(opts)))
        except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as e:
            if isinstance(e, CLoopUnavailableError):
                raise
            raise CLoopUnavailableError(f"the interpreters do not expose raw tensor buffers ({type(e).__name__}: "
                                   f"{e})") from e
        buffers = [a for r in runners for a in (r[4], r[6])]
        if len(set(buffers)) != len(buffers):
            raise CLoopUnavailableError("two piece options share an interpreter or a tensor buffer")
        if len(exit_sizes) > 1:
            raise CLoopUnavailableError(f"exits with different numbers of logits {sorted(exit_sizes)}")
        try:
            self.loop = _cloop.Loop(pieces, runners, IMAGE_BYTES, _confidence)
        except ValueError as e:
            raise CLoopUnavailableError(str(e)) from e
        self.num_exits = num_exits
        self.direct = self.loop.direct()
        """How many piece interpreters run through the C++ Invoke (the rest call back their Python invoke)."""
        self._costs: object = None
        self._costs_ok = False

    def run(self, image: np.ndarray, budget: float, costs: list, reserves: list, thresholds: Any,
            defer_exits: bool) -> tuple | None:
        """Result fields for one checked image and plan, or None: the Python loop answers this sample instead
        (a budget below the cheapest answer, which the decision core refuses; a plan whose reserves are not the
        ones the core computes from its costs)."""
        if costs is not self._costs:
            self._costs, self._costs_ok = costs, False
            with contextlib.suppress(TypeError, ValueError):  # a malformed plan: the Python loop's own error
                self._costs_ok = self.loop.set_costs(costs) == list(reserves)
            if not self._costs_ok:
                notice_once("a plan whose reserves are not the ones Scheduler.costs computes")
        if not self._costs_ok:
            return None
        th = None if thresholds is None else [float(v) for v in np.broadcast_to(thresholds, (self.num_exits,))]
        t0 = time.perf_counter()
        out = self.loop.run(np.ascontiguousarray(image), float(budget), th, bool(defer_exits))
        if out is None:
            return None
        pred, exit_j, spent, macs, decisions, halted, logits, rows, invoke_s = out
        exit_logits = list(np.frombuffer(logits, np.int8).reshape(rows, -1)) if rows else []
        return (pred, exit_j, spent, macs, decisions, 1e3 * (time.perf_counter() - t0), 1e3 * invoke_s,
                exit_logits, halted)


def attach(manifest: dict, interps: dict, delegate: str, num_exits: int, loop: str) -> tuple[CLoop | None, str]:
    """(the C loop or None, ``"c"`` or ``"python"``) for a scheduler's interpreters and its ``loop`` request.

    ``auto``: the C loop when it can run, else the Python loop with a one-line notice (once per process);
    ``c``: CLoopUnavailableError when it cannot; ``python``: never the C loop.
    """
    if loop not in LOOPS:
        raise CLoopUnavailableError(f"unknown loop {loop!r}; valid: {', '.join(LOOPS)}")
    if loop == "python":
        return None, "python"
    try:
        return CLoop(manifest, interps, delegate, num_exits), "c"
    except CLoopUnavailableError as e:
        if loop == "c":
            raise
        notice_once(str(e))
        return None, "python"
