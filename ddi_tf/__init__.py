"""ddi_tf: Dual Dynamic Inference (input- and resource-dependent inference) in TensorFlow/Keras.

The package uses Keras 2 (``tf_keras``) because tensorflow-model-optimization quantizes only Keras 2
Sequential/Functional models. ``TF_USE_LEGACY_KERAS`` is set here, before anything imports TensorFlow, and so is
TensorFlow's C++ log level (``quiet_tensorflow_startup``): every ``python -m ddi_tf.*`` command imports this
package first.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import MutableMapping, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _has_gpu_driver() -> bool:
    """Whether an NVIDIA driver is installed (Linux: ``/proc/driver/nvidia`` or a ``/dev/nvidia*`` device)."""
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def _asked_for_logs(argv: Sequence[str]) -> bool:
    """absl's ``--verbosity`` / ``-v`` on the command line."""
    return any(a in ("-v", "--v", "--verbosity") or a.startswith(("-v=", "--v=", "--verbosity=")) for a in argv[1:])


def quiet_tensorflow_startup(argv: Sequence[str] | None = None, environ: MutableMapping[str, str] | None = None,
                             gpu_driver: bool | None = None) -> None:
    """Sets ``TF_CPP_MIN_LOG_LEVEL`` for a quiet start, unless the user chose (call before TensorFlow is imported).

    On a machine without an NVIDIA driver, TensorFlow's CUDA probe logs ``failed call to cuInit`` as a C++ error
    on every start; it is the only C++ error of a normal start there, so the level is 3 (C++ errors hidden; a
    failing op still raises its error in Python, and Python warnings and absl logs are untouched). With a driver
    the level is 2 (C++ errors shown), and also when the user set ``CUDA_VISIBLE_DEVICES`` (they chose the
    devices: a failing probe is news). Nothing changes when the user set ``TF_CPP_MIN_LOG_LEVEL`` or passed
    absl's ``--verbosity`` (``-v``): TensorFlow then logs everything. GPUs are never hidden:
    ``CUDA_VISIBLE_DEVICES=""`` does not stop the probe's message, and on a GPU machine it would silently train
    on the CPU.

    Args:
      argv: the command line (default ``sys.argv``).
      environ: the environment to change (default ``os.environ``).
      gpu_driver: whether an NVIDIA driver is installed (default: detected).
    """
    env = os.environ if environ is None else environ
    if "TF_CPP_MIN_LOG_LEVEL" in env or _asked_for_logs(sys.argv if argv is None else argv):
        return
    if "CUDA_VISIBLE_DEVICES" in env:  # the user chose the devices: a failing probe is news to them
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        return
    env["TF_CPP_MIN_LOG_LEVEL"] = "2" if (_has_gpu_driver() if gpu_driver is None else gpu_driver) else "3"


quiet_tensorflow_startup()

try:  # the board package owns the manifest format, its checksums and the label rule; ddi_tf uses them
    import ddi_runtime  # noqa: F401
except ImportError as e:  # pragma: no cover - an installation error, not a code path
    raise ImportError("ddi_tf needs the board package ddi_runtime (no TensorFlow, in this repository's tflite/): "
                      "pip install -e ./tflite (README, 'Set up, run, test')") from e

__version__ = "0.1.0"
