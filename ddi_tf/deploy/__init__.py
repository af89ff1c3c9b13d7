"""From a trained run to int8 pieces: the export (``export``: pieces, conversion, checks, manifest) and the
Keras-vs-int8 agreement (``parity``). The top layer of the library: imports training (to load a run) and
everything below.
"""
