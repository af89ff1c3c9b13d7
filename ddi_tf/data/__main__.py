"""Command: ``python -m ddi_tf.data --data_dir=D --write_test_npz=test.npz [--limit=N]``: the test split as the
board tools read it (``ddi_tf.data.write_npz``).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

import ddi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from ddi_tf.data import DATASETS, DataError, interleave_classes, load_cifar, write_npz


def _define_flags() -> None:
    flags.DEFINE_string("data_dir", None, "CIFAR archive or folder (default: the Keras cache).")
    flags.DEFINE_enum("dataset", "cifar10", sorted(DATASETS), "Which data set.")
    flags.DEFINE_string("cache_dir", None, "Where to cache the decoded arrays.")
    flags.DEFINE_string(
        "write_test_npz",
        None,
        "Write the test split (x, y, class_names) to this .npz in load_cifar's order: class-interleaved for "
        "image-folder data, so the first N images (--limit of ddi_runtime eval, micro/verify.py, "
        "benchmarks) are class-balanced and are the ones training's --eval_limit=N evaluates; CIFAR's own "
        "mixed order for the python batches.",
    )
    flags.DEFINE_integer("limit", None, "Write only the first N test images (of that order).", lower_bound=1)
    flags.mark_flag_as_required("write_test_npz")


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        data = load_cifar(f.data_dir, f.dataset, cache_dir=f.cache_dir)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    # No reshuffle: load_cifar's order already makes prefixes class-balanced (image folders are
    # class-interleaved), and keeping it means the file's first N images are training's --eval_limit=N.
    x, y = data.x_test[: f.limit], data.y_test[: f.limit]
    write_npz(f.write_test_npz, x, y, data.class_names)
    print(
        f"{f.dataset}: {len(data.x_train)} train, {len(data.x_test)} test images, {data.num_classes} classes"
    )
    interleaved = np.array_equal(interleave_classes(data.y_test), np.arange(len(data.y_test)))
    order = "class-interleaved (every prefix class-balanced)" if interleaved else "the source's own order"
    per_class = np.bincount(y, minlength=data.num_classes).tolist()
    print(f"wrote the first {len(x)} test images to {f.write_test_npz}, {order}; per class: {per_class}")


if __name__ == "__main__":
    _define_flags()
    app.run(_main)
