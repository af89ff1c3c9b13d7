"""The data package's arrays and files (split, .npz, synthetic data) and its tf.data pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_data import _images  # the same tiny images as the decoding tests

from ddi_tf import data as D


def test_split_train_val() -> None:
    data = D.synthetic_cifar(num_train=100, num_test=10)
    (x_tr, y_tr), (x_val, y_val) = D.split_train_val(data, 20, seed=3)
    (x_tr2, _), (x_val2, _) = D.split_train_val(data, 20, seed=3)
    assert len(x_tr) == 80 and len(x_val) == 20 and len(y_tr) == 80 and len(y_val) == 20
    np.testing.assert_array_equal(x_val, x_val2)
    np.testing.assert_array_equal(x_tr, x_tr2)
    (_, _), (x_val3, _) = D.split_train_val(data, 20, seed=4)
    assert not np.array_equal(x_val, x_val3)
    (x_all, _), (x_none, y_none) = D.split_train_val(data, 0, seed=0)
    assert len(x_all) == 100 and x_none.shape == (0, 32, 32, 3) and y_none.shape == (0,)
    with pytest.raises(D.DataError, match="val_size=100"):
        D.split_train_val(data, 100, seed=0)


def test_npz_round_trip(tmp_path: Path) -> None:
    x, y = _images()
    D.write_npz(tmp_path / "t.npz", x, y.astype(np.int32), ["a"] * 10)
    x2, y2 = D.load_npz(tmp_path / "t.npz")
    np.testing.assert_array_equal(x2, x)
    assert y2.dtype == np.int64 and np.array_equal(y2, y)
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(D.DataError, match="expected arrays 'x' and 'y'"):
        D.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", x=x.astype(np.float32), y=y)
    with pytest.raises(D.DataError, match="expected uint8"):
        D.load_npz(tmp_path / "bad2.npz")


def test_synthetic_cifar_is_learnable() -> None:
    data = D.synthetic_cifar(num_train=200, num_test=100, num_classes=10, seed=1)
    assert data.x_train.shape == (200, 32, 32, 3) and data.x_test.shape == (100, 32, 32, 3)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64 and data.num_classes == 10
    centroids = np.stack([data.x_train[data.y_train == c].mean(0) for c in range(10)]).reshape(10, -1)
    dist = ((data.x_test.reshape(100, 1, -1).astype(float) - centroids) ** 2).sum(-1)
    assert (dist.argmin(1) == data.y_test).mean() > 0.5


def test_normalization_for() -> None:
    assert D.normalization_for("cifar10") == (D.CIFAR10_MEAN, D.CIFAR10_STD)
    assert D.normalization_for("cifar100") == (D.CIFAR100_MEAN, D.CIFAR100_STD)


def _batches(ds, k: int) -> list:
    return [(x.numpy(), y.numpy()) for x, y in ds.take(k)]


def test_train_dataset_shapes_and_determinism() -> None:
    x, y = _images()
    first = _batches(D.make_train_dataset(x, y, 8, seed=1), 6)
    again = _batches(D.make_train_dataset(x, y, 8, seed=1), 6)
    other = _batches(D.make_train_dataset(x, y, 8, seed=2), 1)
    images, labels = first[0]
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (8,) and labels.dtype == np.int32
    for (a, b), (c, d) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert not np.array_equal(first[0][0], other[0][0])


@pytest.mark.parametrize("shuffle_buffer", [None, 7])
def test_train_dataset_skip_batches_resumes(shuffle_buffer) -> None:
    x, y = _images()  # 30 images, batch 8: batch 5 starts in the second epoch
    fresh = _batches(D.make_train_dataset(x, y, 8, seed=5, shuffle_buffer=shuffle_buffer), 7)
    resumed = _batches(
        D.make_train_dataset(x, y, 8, seed=5, shuffle_buffer=shuffle_buffer, skip_batches=5), 2
    )
    for (a, b), (c, d) in zip(fresh[5:], resumed, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_train_dataset_epochs_are_permutations() -> None:
    x = np.zeros((12, 32, 32, 3), np.uint8)
    y = np.arange(12)
    batches = _batches(D.make_train_dataset(x, y, 4, seed=0, augment=False), 6)
    epochs = [np.concatenate([b[1] for b in batches[i : i + 3]]) for i in (0, 3)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(12))
    assert not np.array_equal(epochs[0], epochs[1])


def test_augmentation_crops_with_zero_padding_and_flips() -> None:
    x = np.full((64, 32, 32, 3), 255, np.uint8)
    x[:, :, :16] = 100  # left half differs, so flips show
    y = np.zeros(64, np.int64)
    images, _ = _batches(D.make_train_dataset(x, y, 64, seed=0, mean=(0, 0, 0), std=(1, 1, 1)), 1)[0]
    assert set(np.unique(images)) <= {0.0, 100.0, 255.0}
    assert (images == 0).any()  # some crops reach into the padding
    assert (images[:, 16, 4, 0] == 255).any() and (images[:, 16, 4, 0] == 100).any()  # flipped and not


def test_eval_dataset_keeps_remainder_in_order() -> None:
    x, y = _images()
    batches = _batches(D.make_eval_dataset(x[:10], y[:10], 4, mean=(0, 0, 0), std=(2, 2, 2)), 10)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches]), x[:10] / 2.0)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y[:10])


@pytest.mark.parametrize("bad, fragment", [(10, "y[3] = 10 is outside 0..9"), (-1, "y[3] = -1 is outside 0..9")])
def test_npz_labels_outside_the_classes_are_refused(tmp_path: Path, bad, fragment) -> None:
    x, y = _images()
    y = y.astype(np.int64) % 10
    y[3], y[7] = bad, bad
    fragment = fragment.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(D.DataError, match=fragment):
        D.write_npz(tmp_path / "t.npz", x, y, [f"c{i}" for i in range(10)])
    np.savez(tmp_path / "t.npz", x=x, y=y, class_names=np.array([f"c{i}" for i in range(10)]))
    with pytest.raises(D.DataError, match=fragment):
        D.load_npz(tmp_path / "t.npz")
    np.savez(tmp_path / "u.npz", x=x, y=y)  # no class names: checked against the caller's num_classes
    with pytest.raises(D.DataError, match=fragment):
        D.load_npz(tmp_path / "u.npz", num_classes=10)


def test_npz_non_integer_labels_are_refused(tmp_path: Path) -> None:
    x, y = _images()
    y = (y % 10).astype(np.float64)
    y[5] = 2.5
    np.savez(tmp_path / "t.npz", x=x, y=y)
    with pytest.raises(D.DataError, match=r"y\[5\] = 2.5 is not an integer"):
        D.load_npz(tmp_path / "t.npz")
