"""TFLite interpreter back ends: LiteRT (ai_edge_litert), tflite-runtime, or tensorflow.lite; never imports
TensorFlow unless asked to (``--interpreter=tensorflow``)."""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS = ("litert", "tflite_runtime", "tensorflow")
DELEGATES = ("default", "none", "edgetpu")
EDGETPU_LIBRARIES = ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll")


class RuntimeSetupError(RuntimeError):
    """No usable interpreter, or a requested delegate is not available."""


def _module(backend: str):
    name = {"litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter",
            "tensorflow": "tensorflow.lite"}[backend]
    mod = importlib.import_module(name)
    return mod.Interpreter if backend != "tensorflow" else mod.Interpreter, mod


def choose_backend(name: str = "auto") -> str:
    """The first importable back end (``auto``: LiteRT, then tflite-runtime, then tensorflow.lite)."""
    candidates = BACKENDS if name == "auto" else (name,)
    if name != "auto" and name not in BACKENDS:
        raise RuntimeSetupError(f"unknown interpreter {name!r}; valid: auto, {', '.join(BACKENDS)}")
    errors = []
    for backend in candidates:
        try:
            _module(backend)
        except ImportError as e:
            errors.append(f"{backend}: {e}")
            continue
        return backend
    raise RuntimeSetupError("no TFLite interpreter could be imported (" + "; ".join(errors) + "). Install one: "
                            "pip install ai-edge-litert (or tflite-runtime)")


def make_interpreter(backend: str, model_path: str, threads: int = 1, delegate: str = "default") -> Any:
    """An allocated interpreter for one ``.tflite`` file.

    Args:
      backend: from ``choose_backend``.
      model_path: the model file.
      threads: CPU threads.
      delegate: ``default`` (the back end's default CPU path, XNNPACK for LiteRT), ``none`` (builtin kernels,
        no delegate: the bit-exact reference for parity) or ``edgetpu`` (the Coral delegate; a clear error
        when its library is not installed).
    """
    interpreter_cls, mod = _module(backend)
    kwargs: dict[str, Any] = {"model_path": model_path, "num_threads": threads}
    if delegate == "edgetpu":
        load = getattr(mod, "load_delegate", None)
        if load is None:
            raise RuntimeSetupError(f"the {backend} interpreter cannot load delegates")
        errors = []
        for lib in EDGETPU_LIBRARIES:
            try:
                kwargs["experimental_delegates"] = [load(lib)]
                break
            except (ValueError, OSError) as e:
                errors.append(f"{lib}: {e}")
        else:
            raise RuntimeSetupError("--delegate=edgetpu: the Edge TPU runtime (libedgetpu) is not installed or no "
                                    "Edge TPU is attached (" + "; ".join(errors) + ")")
    elif delegate == "none":
        resolver = getattr(mod, "OpResolverType", None) or getattr(getattr(mod, "experimental", None),
                                                                    "OpResolverType", None)
        if resolver is not None:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif delegate != "default":
        raise RuntimeSetupError(f"unknown delegate {delegate!r}; valid: {DELEGATES}")
    interp = interpreter_cls(**kwargs)
    interp.allocate_tensors()
    return interp


STATE_INPUTS, STATE_OUTPUTS = ("h", "c"), ("h_out", "c_out")
"""An rnn gate piece's LSTM state tensors by signature name (``ddi_tf.deploy.pieces.STATE_IO``)."""


def piece_io(interp: Any) -> tuple[int, int, tuple[int, int, int, int] | None]:
    """(input index, output index, state) of a piece interpreter: its one input and output, or for an rnn gate
    piece (several inputs) the feature map ``x`` and the logits, and ``state`` = the indices of ``h``, ``c``,
    ``h_out``, ``c_out`` from the model's signature (None for any other piece)."""
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) == 1 and len(outputs) == 1:
        return inputs[0]["index"], outputs[0]["index"], None
    sigs = interp._get_full_signature_list()  # noqa: SLF001 - LiteRT and tflite-runtime both have it
    if len(sigs) != 1:
        raise ValueError(f"a piece with {len(inputs)} inputs needs one signature, found {len(sigs)}")
    (sig,) = sigs.values()
    ins, outs = sig["inputs"], sig["outputs"]
    logits = [k for k in outs if k not in STATE_OUTPUTS]
    if sorted(ins) != sorted(("x", *STATE_INPUTS)) or sorted(set(outs) - set(logits)) != sorted(STATE_OUTPUTS) \
            or len(logits) != 1:
        raise ValueError(f"not an rnn gate piece: signature inputs {sorted(ins)}, outputs {sorted(outs)}")
    return ins["x"], outs[logits[0]], (ins["h"], ins["c"], outs["h_out"], outs["c_out"])
