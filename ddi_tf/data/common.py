"""What every part of the data package shares: the data sets, ``CifarData`` and ``DataError``."""

from __future__ import annotations

import dataclasses

import numpy as np

DATASETS = {"cifar10": 10, "cifar100": 100}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_MEAN = (125.3, 123.0, 113.9)
CIFAR10_STD = (63.0, 62.1, 66.7)
CIFAR100_MEAN = (129.3, 124.1, 112.4)
CIFAR100_STD = (68.2, 65.4, 70.4)
IMAGE_SHAPE = (32, 32, 3)

# Part of every cache key and stored in every cache file; bump it whenever the decoded arrays change.
# 1: image-folder splits sorted by class. 2: image-folder splits class-interleaved; 'cache_version' stored.
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_ARCHIVE_EXTS = (".tar.gz", ".tgz", ".tar")
_SPLITS = ("train", "test")
_PICKLE_DIR = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# dataset -> (train files, test files, meta file, label key, label-names key)
_PICKLE_LAYOUT = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels",
                "label_names"),
    "cifar100": (["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}  # fmt: skip
_PICKLE_NAMES = {n for tr, te, meta, _, _ in _PICKLE_LAYOUT.values() for n in (*tr, *te, meta)}


class DataError(ValueError):
    """Missing, corrupt or inconsistent input data."""


@dataclasses.dataclass(eq=False)
class CifarData:
    """A CIFAR train/test split: uint8 images (N, 32, 32, 3) and int64 labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


def _hint(dataset: str) -> str:
    if dataset == "cifar100":
        return "pass --data_dir=/path/to/cifar-100-python (or cifar-100-python.tar.gz)"
    return "pass --data_dir=/path/to/cifar10-jpeg.tar.gz or cifar-10-batches-py"


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; set --dataset to one of {sorted(DATASETS)}")
    return dataset


def _mismatch(found: str, dataset: str, where: str) -> DataError:
    return DataError(
        f"{where} holds {found} data but --dataset={dataset}; "
        f"pass --dataset={found} or point --data_dir at {dataset} data"
    )


# ----------------------------------------------------------------------------------------------- decoding


# ---------------------------------------------------------------------------------------- locating data


# --------------------------------------------------------------------------------------------- caching


# -------------------------------------------------------------------------------------- arrays and files


# -------------------------------------------------------------------------------------------- tf.data


