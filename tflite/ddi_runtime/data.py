"""Evaluation data for the board: ``.npz`` files with ``x`` uint8 (N, 32, 32, 3) and ``y`` (N,) class indices."""

from __future__ import annotations

import os

import numpy as np

from ddi_runtime.manifest import ModelError


def check_labels(y: np.ndarray, num_classes: int | None, where: str) -> np.ndarray:
    """``y`` as int64 class indices, or ModelError naming the first label that is not one of 0..num_classes-1.

    Whole-number float labels (3.0) are accepted as their integers; any other float (2.5, NaN, inf) is not an
    integer and refused, as are labels outside the model's classes: they would only make the accuracy wrong.
    ``num_classes`` None: only negative labels are out of range.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ModelError(f"{where}: labels y have shape {y.shape}, expected (N,)")
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(y) | (np.floor(y) != y)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ModelError(f"{where}: label y[{i}] = {y[i]!r} is not an integer class index "
                             f"({int(bad.sum())} of {len(y)} labels are not)")
    elif y.dtype.kind not in "iu":
        raise ModelError(f"{where}: labels y are {y.dtype}, expected integer class indices")
    bad = (y < 0) | (y >= num_classes) if num_classes is not None else y < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = int(y[i]) if y.dtype.kind != "f" else y[i].item()
        classes = f"0..{num_classes - 1} (the model has {num_classes} classes" if num_classes else "0.. (a class index"
        raise ModelError(f"{where}: label y[{i}] = {value!r} is outside {classes}; {int(bad.sum())} of {len(y)} "
                         "labels are outside)")
    return y.astype(np.int64)


def load_npz(path: str, limit: int = 0, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (N, 32, 32, 3), y int64 (N,), validated; labels checked against ``num_classes`` when given."""
    if not os.path.exists(path):
        raise ModelError(f"data file {path} does not exist (write one with python -m ddi_tf.data --write_test_npz)")
    try:
        with np.load(path) as d:
            x, y = d["x"], d["y"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{path} is not an .npz with arrays x and y: {e}") from e
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8 or len(y) != len(x):
        raise ModelError(f"{path}: expected x uint8 (N, 32, 32, 3) and y (N,), got x {x.dtype} {x.shape}, y {y.shape}")
    y = check_labels(y, num_classes, path)
    if limit:
        x, y = x[:limit], y[:limit]
    return x, y
