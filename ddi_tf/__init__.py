"""ddi_tf: Dual Dynamic Inference (input- and resource-dependent inference) in TensorFlow/Keras.

The package uses Keras 2 (``tf_keras``) because tensorflow-model-optimization quantizes only Keras 2
Sequential/Functional models. ``TF_USE_LEGACY_KERAS`` is set here, before anything imports TensorFlow.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
