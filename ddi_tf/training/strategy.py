"""How a training runs: the tf.distribute strategy its config names, the CPU split used to test the mirrored one,
and the compute precision of the model it trains."""

from __future__ import annotations

import contextlib

import tensorflow as tf
import tf_keras as keras

from ddi_tf.training.config import TrainConfig


def make_strategy(cfg: TrainConfig) -> tf.distribute.Strategy:
    """The tf.distribute strategy the config names."""
    if cfg.strategy == "default":
        return tf.distribute.get_strategy()
    if cfg.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if cfg.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=cfg.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def split_cpu(devices: int) -> None:
    """Splits the physical CPU into ``devices`` logical devices; call before TensorFlow runs anything."""
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


@contextlib.contextmanager
def precision(policy: str):
    """Builds models under the tf_keras dtype policy ``policy`` (``float32``, ``mixed_bfloat16``) and restores the
    previous one after: only the model trained in the float stages computes in reduced precision."""
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)
