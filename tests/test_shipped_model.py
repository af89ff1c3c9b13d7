"""The int8 model committed under models/ (README: how it was made) loads and keeps every budget."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import ddi_tf  # noqa: F401
from ddi_runtime import Scheduler
from ddi_runtime.manifest import check_costs, file_sha256

MODEL = Path(__file__).resolve().parents[1] / "models" / "cifar10_resnet20_ddi"


def test_shipped_model_files_match_their_manifest():
    manifest = json.loads((MODEL / "manifest.json").read_text())
    check_costs(manifest, str(MODEL))  # MACs recomputed from every piece's graph
    files = [o["file"] for p in manifest["pieces"] for o in p["options"] if not o["identity"]]
    for p in manifest["pieces"]:
        for o in p["options"]:
            if not o["identity"]:
                assert file_sha256(str(MODEL / o["file"])) == o["sha256"], o["file"]
    assert len(files) == 54 and manifest["quantization"] == "qat"


def test_shipped_model_keeps_every_budget_it_is_given():
    sched = Scheduler(str(MODEL), delegate="none")
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    full = float(sched.manifest["full_macs"])
    plan = sched.costs("macs")
    for fraction in (0.25, 0.5, 1.0):
        for x in images:
            res = sched.run(x, fraction * full, "macs", None, plan)
            assert res.cost <= fraction * full and res.macs <= fraction * full and 0 <= res.pred < 10


@pytest.mark.slow
def test_shipped_model_accuracy_on_real_test_images(tmp_path):
    """On the real test split: what README and RESULTS report for it (76.4% at 0.46 of full MACs, all 10,000)."""
    data = os.environ.get("DDI_DATA")
    if not data:
        pytest.skip("set DDI_DATA to the CIFAR-10 folder or archive")
    import subprocess
    import sys

    npz = tmp_path / "test.npz"
    subprocess.run([sys.executable, "-m", "ddi_tf.data", f"--data_dir={data}", f"--write_test_npz={npz}"],
                   check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "ddi_runtime", "eval", f"--model_dir={MODEL}", f"--data={npz}",
                          "--limit=2000", "--json"], check=True, capture_output=True, text=True).stdout
    res = json.loads(out[out.index("{"):])
    assert res["over_budget"] == 0 and res["accuracy"] > 0.74 and res["mean_macs"] < 0.5 * 41673680
