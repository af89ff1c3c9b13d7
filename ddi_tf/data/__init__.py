"""CIFAR-10/100 loading, caching and deterministic ``tf.data`` input pipelines.

``load_cifar`` accepts the canonical python-pickle folders (``cifar-10-batches-py``, ``cifar-100-python``),
image-folder trees (``train/<class>/*.jpg|png`` + ``test/<class>/...``) and ``.tar.gz`` archives of either.
Archives are read member by member (never extracted); the decoded uint8 arrays are cached as one ``.npz``
keyed by the source's path, size and modification time, so later runs load in about a second.

The python batches keep CIFAR's own (mixed) order. An image-folder tree has no order of its own beyond class
folders, so each of its splits is returned class-interleaved (see ``interleave_classes``): any prefix, such
as the first N test images that ``--eval_limit`` or a runtime's ``--limit`` evaluates, is class-balanced.

Every problem with the input data raises ``DataError`` with a message that names the file and the fix.

The package: ``common`` (data sets, ``CifarData``, ``DataError``), ``decode`` (pickles and image trees),
``sources`` (``--data_dir``, the Keras cache, download, the decoded-array cache), ``arrays`` (split, ``.npz``,
synthetic data), ``pipeline`` (``tf.data``); ``python -m ddi_tf.data`` writes the test split for the board tools.
The names below are its public interface.
"""

from __future__ import annotations

from ddi_tf.data.arrays import load_npz, split_train_val, synthetic_cifar, write_npz
from ddi_tf.data.common import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    IMAGE_SHAPE,
    CifarData,
    DataError,
)
from ddi_tf.data.decode import interleave_classes
from ddi_tf.data.pipeline import make_eval_dataset, make_train_dataset, normalization_for, normalize
from ddi_tf.data.sources import load_cifar

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "IMAGE_SHAPE",
    "CifarData",
    "DataError",
    "interleave_classes",
    "load_cifar",
    "load_npz",
    "split_train_val",
    "synthetic_cifar",
    "write_npz",
    "make_eval_dataset",
    "make_train_dataset",
    "normalization_for",
    "normalize",
]
