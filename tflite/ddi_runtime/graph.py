"""MACs of a ``.tflite`` model, counted from its own graph (no TensorFlow, no flatbuffers package).

The hard budget is only as good as the costs it adds up, so the runtime (and ``micro/gen.py``) recompute each
piece option's MACs from its file and refuse a manifest whose costs disagree. The count follows ``ddi_tf.core.arch``:
multiply-accumulates of convolutions and fully-connected layers, per sample (batch dimension excluded); adds,
pooling, means, activations and 1x1 depthwise convolutions (a per-channel affine, like a batch norm: the stem's
input normalisation) are not MACs. Ops that multiply-accumulate but that ddi_tf never exports
(transposed or 3-D convolutions, batch matmul) are an error rather than a silent zero.

The reader below walks the TFLite flatbuffer (``tensorflow/lite/schema/schema.fbs``) just far enough: the model's
operator codes, and subgraph 0's tensors (shapes) and operators (op code, input and output tensors).
"""

from __future__ import annotations

import struct

CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED = 3, 4, 9
UNCOUNTED_MAC_OPS = {67: "TRANSPOSE_CONV", 126: "BATCH_MATMUL", 132: "CONV_3D", 141: "CONV_3D_TRANSPOSE"}


class GraphError(ValueError):
    """A file that is not a TFLite flatbuffer this reader understands, or an op whose MACs it cannot count."""


class _Table:
    """A flatbuffer table: ``buf`` and the table's position."""

    __slots__ = ("buf", "pos", "vtable", "vsize")

    def __init__(self, buf: bytes, pos: int):
        if not 0 <= pos <= len(buf) - 4:
            raise GraphError(f"table offset {pos} outside the {len(buf)}-byte buffer")
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        if not 0 <= self.vtable <= len(buf) - 4:
            raise GraphError(f"vtable offset {self.vtable} outside the buffer")
        self.vsize = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, i: int) -> int | None:
        slot = 4 + 2 * i
        if slot >= self.vsize:
            return None
        off = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + off if off else None

    def scalar(self, i: int, fmt: str, default: int = 0) -> int:
        at = self._field(i)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _vector(self, i: int) -> tuple[int, int]:
        at = self._field(i)
        if at is None:
            return 0, 0
        start = at + struct.unpack_from("<I", self.buf, at)[0]
        n = struct.unpack_from("<I", self.buf, start)[0]
        if start + 4 + 4 * n > len(self.buf):
            raise GraphError(f"vector at {start} runs past the end of the buffer")
        return start + 4, n

    def ints(self, i: int) -> list[int]:
        start, n = self._vector(i)
        return list(struct.unpack_from(f"<{n}i", self.buf, start)) if n else []

    def tables(self, i: int) -> list[_Table]:
        start, n = self._vector(i)
        return [_Table(self.buf, start + 4 * k + struct.unpack_from("<I", self.buf, start + 4 * k)[0])
                for k in range(n)]


def _prod(values) -> int:
    n = 1
    for v in values:
        n *= int(v)
    return n


def graph_macs(buf: bytes, where: str = "model") -> int:
    """Per-sample MACs of subgraph 0 of the TFLite flatbuffer ``buf`` (conv, depthwise conv, fully connected)."""
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise GraphError(f"{where} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        # OperatorCode: 0 deprecated_builtin_code (int8), 3 builtin_code (int32); the larger one is the op
        codes = [max(c.scalar(0, "b"), c.scalar(3, "i")) for c in model.tables(1)]
        subgraphs = model.tables(2)
        if not subgraphs:
            raise GraphError(f"{where} has no subgraph")
        sub = subgraphs[0]
        shapes = [t.ints(0) for t in sub.tables(0)]  # Tensor: 0 shape
        total = 0
        for op in sub.tables(3):  # Operator: 0 opcode_index, 1 inputs, 2 outputs
            code = codes[op.scalar(0, "I")]
            if code in UNCOUNTED_MAC_OPS:
                raise GraphError(f"{where} uses {UNCOUNTED_MAC_OPS[code]}, whose MACs this runtime does not count")
            if code not in (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED):
                continue
            inputs, outputs = op.ints(1), op.ints(2)
            out, w = shapes[outputs[0]], shapes[inputs[1]]
            if code == CONV_2D:  # out (N, OH, OW, OC), filter (OC, KH, KW, IC per group)
                total += _prod(out[1:]) * _prod(w[1:])
            elif code == DEPTHWISE_CONV_2D:  # out (N, OH, OW, OC), filter (1, KH, KW, OC)
                if _prod(w[1:3]) > 1:  # (1x1: a per-channel affine, e.g. the stem's input normalisation)
                    total += _prod(out[1:]) * _prod(w[1:3])
            else:  # out (N, ..., OUT), weights (OUT, IN)
                total += _prod(out[1:-1]) * w[0] * w[1]
        return total
    except (struct.error, IndexError) as e:
        raise GraphError(f"{where} is not a well-formed TFLite flatbuffer: {e}") from e


def file_macs(path: str) -> int:
    """``graph_macs`` of a ``.tflite`` file."""
    with open(path, "rb") as f:
        return graph_macs(f.read(), path)
