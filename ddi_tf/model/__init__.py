"""The Keras model: weightless serialisable layers (``layers``) and the builder (``build``) that makes a
functional tf_keras model from ``ddi_tf.core``'s description. Imports ``ddi_tf.core`` only.
"""
