"""The int8 grid rules the QAT overlay and the export share (no TensorFlow): how a float range becomes TFLite's
(scale, zero point), and the rounding that makes producer and consumer of a piece boundary agree on the scale.

``ddi_tf.quant.qat`` rounds its tied edge ranges with ``exact_range_max`` and ``ddi_tf.deploy.export`` imposes the same
ranges, so neither imports the other.
"""

from __future__ import annotations

import numpy as np


def exact_range_max(hi: float) -> float:
    """Rounds a [0, hi] range up so that hi / 255 has a short mantissa.

    Then the scale is the same whether computed in float32 (the fake-quant op) or float64 (the converter's
    calibration), and the converter does not insert a requantisation at a piece boundary.
    """
    scale = max(float(hi), 1e-6) / 255.0
    step = 2.0 ** (np.floor(np.log2(scale)) - 12)
    return float(255.0 * np.ceil(scale / step) * step)


def exact_signed_range(lo: float, hi: float) -> tuple[float, float]:
    """A [lo, hi] range (lo <= 0 <= hi) widened so that 0 and both ends lie exactly on the int8 grid of a
    short-mantissa scale (``exact_range_max``): the fake-quant op's nudging then leaves it unchanged, and
    ``int8_params`` gives the (scale, zero point) the converter derives."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = exact_range_max((hi - lo) * 256.0 / 255.0) / 255.0  # one step of room for rounding lo to the grid
    below = int(np.ceil(-lo / scale - 1e-9))
    return -below * scale, (255 - below) * scale


def int8_params(lo: float, hi: float) -> tuple[float, int]:
    """The (scale, zero_point) TFLite derives from a fake-quant range (nudged so 0 is exact)."""
    scale = (hi - lo) / 255.0
    zp = int(round(-128 - lo / scale))
    return scale, int(np.clip(zp, -128, 127))
