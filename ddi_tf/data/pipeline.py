"""The tf.data pipeline: normalisation, augmentation (pad-crop and flip, seeded per step so that a resumed run
sees the same batches) and the training and evaluation datasets."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ddi_tf.data.common import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DataError, _check_dataset


def normalization_for(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) on the 0..255 scale for ``cifar10`` or ``cifar100``."""
    _check_dataset(dataset)
    return (CIFAR10_MEAN, CIFAR10_STD) if dataset == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)


def normalize(x: tf.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> tf.Tensor:
    """``(x - mean) / std`` per channel, as float32 (``x`` is uint8 or float, channels last)."""
    x = tf.cast(x, tf.float32)
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad 4, random 32x32 crop and random horizontal flip of a uint8 batch, from a stateless seed."""
    batch = tf.shape(images)[0]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]])
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, minval=0, maxval=9, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(32)
    cols = offsets[:, 1:] + tf.range(32)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)


def _check_pipeline_args(x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
    if len(x) == 0 or len(x) != len(y):
        raise DataError(f"need a non-empty dataset with as many labels as images, got {len(x)} and {len(y)}")
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")


def make_train_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    augment: bool = True,
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
    shuffle_buffer: int | None = None,
    drop_remainder: bool = True,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """Endless, shuffled, augmented training batches ``(float32 (B, 32, 32, 3), int32 (B,))``.

    The order and the augmentation depend only on ``seed``: with ``shuffle_buffer=None`` each epoch is a
    full permutation from a stateless shuffle seeded by (seed, epoch), and batch ``k`` is augmented with
    the stateless seed (seed, k). ``skip_batches=k`` starts exactly where an uninterrupted run's
    ``k``-th batch would start, without computing the skipped batches. An integer ``shuffle_buffer`` uses
    ``tf.data`` shuffling with that buffer instead (also seeded, but resuming replays the skipped indices).
    """
    _check_pipeline_args(x, y, batch_size)
    if skip_batches < 0:
        raise DataError(f"skip_batches must be >= 0, got {skip_batches}")
    n = len(x)
    images = tf.constant(np.asarray(x, np.uint8))
    labels = tf.constant(np.asarray(y, np.int32))
    skip = skip_batches * batch_size  # elements consumed before the first batch
    if shuffle_buffer is None:
        first_epoch, offset = divmod(skip, n)

        def epoch_order(epoch: tf.Tensor) -> tf.data.Dataset:
            perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=[seed, epoch])
            return tf.data.Dataset.from_tensor_slices(perm)

        order = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_order).skip(offset)
    else:
        order = tf.data.Dataset.range(n).shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        order = order.repeat().skip(skip)

    def load(step: tf.Tensor, idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.gather(images, idx)
        if augment:
            batch = _augment(batch, tf.stack([tf.constant(seed, tf.int64), step]))
        return normalize(batch, mean, std), tf.gather(labels, idx)

    batches = order.batch(batch_size, drop_remainder=drop_remainder).enumerate(start=skip_batches)
    batches = batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
) -> tf.data.Dataset:
    """One pass of normalised batches ``(float32 (B, 32, 32, 3), int32 (B,))`` in order, remainder kept."""
    _check_pipeline_args(x, y, batch_size)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x, np.uint8), np.asarray(y, np.int32))).batch(
        batch_size
    )
    ds = ds.map(
        lambda a, b: (normalize(a, mean, std), b), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.prefetch(tf.data.AUTOTUNE)
