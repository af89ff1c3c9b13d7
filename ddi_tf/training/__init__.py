"""The training loop, its losses and the run directory (``trainer``). Imports evaluation, quant, model,
data and core.
"""
