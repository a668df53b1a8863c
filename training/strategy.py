"""Where training runs: a TPU, several GPUs, or whatever the machine has.

The same model code runs under each; only the scope it is built in changes.
"""

import contextlib
import os

STRATEGIES = ("auto", "tpu", "mirrored", "default")


def pick_strategy(name="auto"):
    """A `tf.distribute` strategy (TensorFlow backend) or, on JAX, a null
    scope after setting a data-parallel Keras distribution."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "jax":
        return _jax_scope()
    import tensorflow as tf

    if name in ("auto", "tpu"):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, RuntimeError, tf.errors.NotFoundError):
            if name == "tpu":
                raise RuntimeError("--strategy tpu: no TPU found")
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _jax_scope():
    import jax
    import keras

    if len(jax.devices()) > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    return _NullStrategy()


class _NullStrategy:
    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()
