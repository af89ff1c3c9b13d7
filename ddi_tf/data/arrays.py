"""Arrays and files: the train/validation split, the test split as ``.npz`` for the board tools, synthetic
data for smoke runs."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from ddi_runtime import ModelError
from ddi_runtime import data as runtime_data
from ddi_tf.data.common import IMAGE_SHAPE, CifarData, DataError
from ddi_tf.data.decode import _check_xy
from ddi_tf.data.sources import _atomic_savez


def split_train_val(
    data: CifarData, val_size: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out ``val_size`` random training images (a seeded permutation): ((x_tr, y_tr), (x_val, y_val))."""
    n = len(data.x_train)
    if not 0 <= val_size < n:
        raise DataError(
            f"val_size={val_size} must be in [0, {n}) (the training split has {n} images); "
            "lower the validation size"
        )
    perm = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return (data.x_train[train], data.y_train[train]), (data.x_train[val], data.y_train[val])


def _check_labels(y: np.ndarray, num_classes: int | None, where: str) -> np.ndarray:
    """``y`` as int64 class indices, or a DataError naming the first label that is not in 0..num_classes-1.

    The rule is the board runtime's (``ddi_runtime.data.check_labels``, the one owner of the ``.npz`` format's
    labels): whole-number float labels are accepted as their integers; 2.5, NaN or inf are not class indices.
    Labels of another dtype or shape are left to ``_check_xy``, which names them.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iuf" or y.ndim != 1:
        return y
    try:
        return runtime_data.check_labels(y, num_classes, where)
    except ModelError as e:
        raise DataError(str(e)) from None


def write_npz(
    path: str | os.PathLike, x: np.ndarray, y: np.ndarray, class_names: list[str] | None = None
) -> None:
    """Atomically write ``x`` (uint8 N x 32 x 32 x 3), ``y`` (int64 N) and ``class_names`` to an ``.npz``.

    Labels must be class indices, in ``0..len(class_names)-1`` when class names are given.
    """
    x, y = np.asarray(x), np.asarray(y)
    y = _check_labels(y, len(class_names) if class_names else None, f"write_npz({path})")
    _check_xy(x, y, f"write_npz({path})")
    names = np.array(class_names if class_names is not None else [], dtype=str)
    _atomic_savez(Path(path), x=x, y=y, class_names=names)


def load_npz(path: str | os.PathLike, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``.npz`` written by :func:`write_npz`; returns validated ``(x, y)``.

    Labels are checked to be class indices in ``0..num_classes-1`` (default: the file's ``class_names``, if any).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if not {"x", "y"} <= set(z.files):
                raise DataError(
                    f"{path}: expected arrays 'x' and 'y', found {z.files}; write it with write_npz"
                )
            x, y = z["x"], z["y"]
            if num_classes is None and "class_names" in z.files:
                num_classes = len(z["class_names"]) or None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: cannot read .npz ({type(e).__name__}: {e}); check the path or rewrite it"
        ) from e
    y = _check_labels(y, num_classes, str(path))
    _check_xy(x, y, str(path))
    return x, y


def synthetic_cifar(
    num_train: int = 512, num_test: int = 256, num_classes: int = 10, seed: int = 0
) -> CifarData:
    """Learnable random data: each class is a fixed blocky colour pattern plus per-image noise (uint8)."""
    if num_train <= 0 or num_test <= 0 or num_classes < 2:
        raise DataError("synthetic_cifar needs num_train > 0, num_test > 0 and num_classes >= 2")
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(30, 225, size=(num_classes, 4, 4, 3)).repeat(8, axis=1).repeat(8, axis=2)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        x = patterns[y] + rng.normal(0.0, 25.0, size=(n, *IMAGE_SHAPE))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    return CifarData(*draw(num_train), *draw(num_test), [f"class_{i}" for i in range(num_classes)])
