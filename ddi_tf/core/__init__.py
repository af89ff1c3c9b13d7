"""Pure Python, no TensorFlow: the model settings (``config``), the network as pieces with their costs (``arch``)
and the cost tables and budget reservation (``costs``). Imports nothing else of ddi_tf.
"""
