"""Quantisation: the int8 grid rules the QAT overlay and the export share (``int8``) and the QAT overlay itself
(``qat``, tensorflow-model-optimization). Imports ``ddi_tf.model`` and ``ddi_tf.core``.
"""
