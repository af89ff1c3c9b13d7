"""The command-line tools start quietly on a CPU machine: no CUDA probe errors unless asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ddi_tf

REPO = Path(__file__).resolve().parents[1]


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tflite")])
    return env


def test_summary_starts_without_cuda_probe_errors():
    res = subprocess.run([sys.executable, "-m", "ddi_tf.summary", "--flagfile=configs/smoke.flags", "--json"],
                         capture_output=True, text=True, env=_clean_env(), cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "cuInit" not in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize("argv, environ, gpu, want", [
    (["train"], {}, False, "3"),  # CPU machine: the failing CUDA probe is the only C++ error at startup
    (["train"], {}, True, "2"),  # a GPU machine keeps its C++ errors
    (["train"], {"TF_CPP_MIN_LOG_LEVEL": "0"}, False, "0"),  # the user's choice
    (["train"], {"CUDA_VISIBLE_DEVICES": "0"}, False, "2"),  # the user chose the devices: errors shown
    (["train", "--verbosity=1"], {}, False, None),  # asked for more
    (["train", "-v", "1"], {}, False, None),
])
def test_quiet_startup_respects_what_the_user_chose(argv, environ, gpu, want):
    env = dict(environ)
    ddi_tf.quiet_tensorflow_startup(argv, env, gpu_driver=gpu)
    assert env.get("TF_CPP_MIN_LOG_LEVEL") == (want if want is not None else environ.get("TF_CPP_MIN_LOG_LEVEL"))
    assert env.get("CUDA_VISIBLE_DEVICES") == environ.get("CUDA_VISIBLE_DEVICES")  # GPUs are never hidden
