"""Where training runs: a TPU, several GPUs, or whatever the machine has.

The same model code runs under each; only the scope it is built in changes.
"""

import contextlib
import sys

import keras

STRATEGIES = ("auto", "tpu", "mirrored", "default")


def keep_tensorflow_out():
    """Under JAX, make TensorFlow unimportable in this process. Keras would
    import it, when installed, only to seed it and for isinstance checks while
    saving: without it the run starts faster, uses less memory, and behaves
    as on a machine that has no TensorFlow (a Colab TPU, a JAX GPU box).
    `import tensorflow` then raises ImportError, which Keras takes as absent."""
    if keras.backend.backend() == "jax" and "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None


def pick_strategy(name="auto"):
    """A `tf.distribute` strategy (TensorFlow backend) or, on JAX, a null
    scope after setting a data-parallel Keras distribution."""
    if keras.backend.backend() == "jax":
        return _jax_scope()
    # Imported here: under JAX, TensorFlow need not even be installed.
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

    if len(jax.devices()) > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    return _NullStrategy()


class _NullStrategy:
    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()
