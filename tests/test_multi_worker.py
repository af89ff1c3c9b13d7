"""--strategy=multi_worker for real: two worker processes on 127.0.0.1 train the smoke config, agree on the
weights, and resume from their checkpoints after one of them is killed (the whole job is then restarted, as
MultiWorkerMirroredStrategy requires)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--stage1_steps=6", "--stage2_steps=2", "--stage3_steps=2", "--rl_steps=0", "--warmup_steps=1",
         "--checkpoint_every=2", "--log_every=2", "--synthetic_train=256", "--synthetic_test=64", "--val_size=64",
         "--budget_fractions=1.0", "--target_fractions=1.0"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(workdirs: list[Path], ports: list[int], logs: Path, round_: int) -> list[subprocess.Popen]:
    procs = []
    for i, workdir in enumerate(workdirs):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                       "task": {"type": "worker", "index": i}})
        env["PYTHONPATH"] = str(REPO)
        log = open(logs / f"worker{i}_{round_}.log", "w")  # noqa: SIM115  (closed with the process)
        procs.append(subprocess.Popen(
            ["nice", "-n", "19", sys.executable, "-m", "ddi_tf.train", "--flagfile=configs/smoke.flags",
             "--strategy=multi_worker", f"--workdir={workdir}", *SHORT],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _weights(workdir: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    path = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("model/")}


@pytest.mark.slow
def test_two_workers_agree_and_resume_after_one_is_killed(tmp_path):
    workdirs = [tmp_path / "w0", tmp_path / "w1"]  # one work directory per worker, as on two machines
    ports = _free_ports(2)
    # round 1: kill worker 1 once both have a checkpoint, then the rest of the job
    procs = _start(workdirs, ports, tmp_path, 1)
    deadline = time.time() + 600
    while time.time() < deadline and not all((w / "checkpoints" / "checkpoint").exists() for w in workdirs):
        assert all(p.poll() is None for p in procs), (tmp_path / "worker0_1.log").read_text()[-3000:]
        time.sleep(1)
    procs[1].send_signal(signal.SIGKILL)
    procs[0].send_signal(signal.SIGKILL)  # the job is restarted as a whole
    for p in procs:
        p.wait(60)
    # round 2: the same command resumes from the checkpoints and finishes
    procs = _start(workdirs, _free_ports(2), tmp_path, 2)
    for i, p in enumerate(procs):
        assert p.wait(900) == 0, (tmp_path / f"worker{i}_2.log").read_text()[-3000:]
    for i in range(2):
        assert "resumed from" in (tmp_path / f"worker{i}_2.log").read_text()
    w0, w1 = _weights(workdirs[0]), _weights(workdirs[1])
    assert w0 and w0.keys() == w1.keys()
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    assert (workdirs[0] / "report.json").exists()
