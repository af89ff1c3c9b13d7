"""Shared pytest setup: make the repository importable and set the Keras 2 switch before TensorFlow loads."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import ddi_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)
