"""Cost tables (MACs, energy, latency) over the network's pieces, and the budget reservation rule.

Energy model
------------
Energy of a layer = compute + memory traffic:

    E = macs * E_MAC + elementwise_ops * E_ADD
        + weight_bytes * E_DRAM_PER_BYTE                 (weights fetched once per inference, off-chip)
        + (in_elems + out_elems) * act_bytes * E_SRAM_PER_BYTE   (activations in on-chip SRAM)

with the 45 nm per-operation energies of M. Horowitz, "Computing's energy problem (and what we can do
about it)", ISSCC 2014 (as tabulated by Han et al., "Learning both weights and connections", NeurIPS 2015):
32-bit float multiply 3.7 pJ, add 0.9 pJ; 8-bit integer multiply 0.2 pJ, add 0.03 pJ; a 32-bit SRAM (8 KB
cache) access 5 pJ; a 32-bit DRAM access 640 pJ. An int8 MAC is one 8-bit multiply and one 32-bit
accumulate add (0.2 + 0.1 pJ). Elementwise layers (adds, ReLU, pooling, un-folded BN) cost one add per
output element plus their memory traffic. All constants live in ``ENERGY_PJ`` below; energies are
reported in microjoules (uJ).

The reservation rule
--------------------
Before each piece the scheduler checks that the piece's cheapest option plus the cheapest way from after
the piece to the next exit still fits in the remaining budget (``reserve``); if not it halts and answers
from the latest exit. For a gated block it runs the gate's choice or the widest cheaper option that fits.
The Keras policy (``ddi_tf.model.layers.BudgetGuard``), the board runtime and the C core implement this rule.
"""

from __future__ import annotations

import dataclasses

from ddi_runtime.latency import read_latency_pieces
from ddi_runtime.manifest import ModelError
from ddi_tf.core.arch import LayerCost, Piece

UNITS = ("macs", "energy", "latency")

ENERGY_PJ: dict[str, dict[str, float]] = {
    "float32": {"mac": 3.7 + 0.9, "add": 0.9, "sram_per_byte": 5.0 / 4, "dram_per_byte": 640.0 / 4, "bytes": 4},
    "int8": {"mac": 0.2 + 0.1, "add": 0.03, "sram_per_byte": 5.0 / 4, "dram_per_byte": 640.0 / 4, "bytes": 1},
}
"""Per-operation energies in picojoules (Horowitz, ISSCC 2014, 45 nm) for each deployment dtype.
int8 models keep int32 biases: counted as 4 bytes per output channel."""


class CostError(ValueError):
    """A cost that cannot be computed (unknown unit, missing latency table, bad budget)."""


def layer_energy_uj(layer: LayerCost, dtype: str = "int8") -> float:
    """Energy of one layer in microjoules under the documented model."""
    e = ENERGY_PJ[dtype]
    nbytes = e["bytes"]
    if layer.kind in ("conv", "dense"):
        pj = layer.macs * e["mac"] + layer.params * nbytes * e["dram_per_byte"]
    else:
        pj = layer.out_elems * e["add"]
    pj += (layer.in_elems + layer.out_elems) * nbytes * e["sram_per_byte"]
    return pj * 1e-6


@dataclasses.dataclass(frozen=True)
class CostTable:
    """Per-piece, per-option costs in one unit, in execution order.

    Args:
      unit: ``macs``, ``energy`` (uJ) or ``latency`` (ms).
      names: piece names in order.
      kinds: piece kinds in order.
      costs: for each piece, the cost of each option (cheapest first).
    """

    unit: str
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    costs: tuple[tuple[float, ...], ...]

    def index(self, name: str) -> int:
        """Position of a piece."""
        return self.names.index(name)

    def reserves(self) -> list[float]:
        """For each piece, the cheapest cost from just after it up to and including the next exit.

        Zero for exit pieces (an answer exists once an exit ran) and for the final exit. Sums of float costs
        depend on their order in the last bit: with integer costs (MACs) every order gives the same sum; with
        fractional costs (energy, latency) a budget within one rounding step of the cheapest path may halt
        before the first exit.
        """
        out = [0.0] * len(self.costs)
        from_next = 0.0  # cheapest cost from piece i+1 (inclusive) to the next exit (inclusive)
        for i in range(len(self.costs) - 1, -1, -1):
            is_exit = self.kinds[i] == "exit"
            out[i] = 0.0 if is_exit else from_next
            from_next = min(self.costs[i]) + (0.0 if is_exit else from_next)
        return out

    def cheapest_answer(self) -> float:
        """The least budget with which the cheapest path reaches the first exit: budgets below it are an error.

        The halting rule checks ``(spent + min(costs)) + reserve > budget`` before each piece, which sums the same
        costs in another order at every piece; with fractional costs (energy, latency) those sums differ in the
        last bit, so the least budget that passes every check is their maximum (with MACs all are equal). The
        board runtime (``ddi_runtime.Scheduler.cheapest_answer``) and the C core (``ddi_cheapest_answer``)
        compute it the same way.
        """
        spent, least = 0.0, 0.0
        for kind, costs, reserve in zip(self.kinds, self.costs, self.reserves(), strict=True):
            least = max(least, spent + min(costs) + reserve)
            spent += min(costs)
            if kind == "exit":
                return least
        raise CostError("the network has no exit")

    def full_cost(self) -> float:
        """Cost when every piece runs its most expensive option (all gates, full widths, all exits)."""
        return float(sum(max(c) for c in self.costs))

    def exit_costs_full(self) -> list[float]:
        """Cumulative cost up to each exit on the all-full path."""
        out, total = [], 0.0
        for kind, costs in zip(self.kinds, self.costs, strict=True):
            total += max(costs)
            if kind == "exit":
                out.append(total)
        return out

    def check_budget(self, budget: float) -> None:
        """Raises CostError when no sample could answer within ``budget``."""
        cheapest = self.cheapest_answer()
        if not budget >= cheapest:
            raise CostError(
                f"budget {budget:.6g} {self.unit} is below the cheapest way to an answer "
                f"({cheapest:.6g} {self.unit}: the stem, every gate and every block skipped, up to the first exit)"
            )

    def to_dict(self) -> dict:
        """JSON form: ``{unit, pieces: [{name, kind, costs}]}``."""
        return {"unit": self.unit, "pieces": [
            {"name": n, "kind": k, "costs": list(c)} for n, k, c in zip(self.names, self.kinds, self.costs,
                                                                          strict=True)]}


def cost_table(pieces: list[Piece], unit: str = "macs", dtype: str = "int8",
               latency_path: str | None = None) -> CostTable:
    """Builds the cost table of ``pieces`` in ``unit``.

    Args:
      pieces: from ``ddi_tf.core.arch.build_pieces``.
      unit: ``macs``, ``energy`` or ``latency``.
      dtype: ``int8`` or ``float32`` (energy only).
      latency_path: JSON file of measured per-piece latencies (latency only): ``{"unit": "ms", "pieces":
        {piece_name: {option_name: ms}}}``, as written by the board runtime's profiler.
    """
    if unit not in UNITS:
        raise CostError(f"unknown cost unit {unit!r}; valid: {UNITS}")
    if unit == "macs":
        costs = [tuple(float(o.macs) for o in p.options) for p in pieces]
    elif unit == "energy":
        if dtype not in ENERGY_PJ:
            raise CostError(f"unknown dtype {dtype!r} for the energy model; valid: {sorted(ENERGY_PJ)}")
        costs = [tuple(sum(layer_energy_uj(x, dtype) for x in o.layers) for o in p.options) for p in pieces]
    else:
        costs = _latency_costs(pieces, latency_path)
    return CostTable(unit, tuple(p.name for p in pieces), tuple(p.kind for p in pieces), tuple(costs))


def _latency_costs(pieces: list[Piece], path: str | None) -> list[tuple[float, ...]]:
    if not path:
        raise CostError(
            "latency cost needs a table of measured per-piece latencies; none was given. Export the model "
            "(python -m ddi_tf.export), run `python -m ddi_runtime profile --model_dir=D` on the target "
            "and pass the latency.json it writes (--latency_table=...)")
    try:
        table = read_latency_pieces(path)  # the board package owns the format
    except ModelError as e:
        raise CostError(str(e)) from None
    out = []
    for p in pieces:
        entry = table.get(p.name)
        if not isinstance(entry, dict):
            raise CostError(f"latency table {path} has no entry for piece {p.name!r}")
        if set(entry) != set(p.option_names):
            raise CostError(f"latency table {path} has options {sorted(entry)} for piece {p.name!r}, this model has "
                            f"{p.option_names}: it was measured for another model (other channel groups?); profile "
                            "this model's export")
        out.append(tuple(entry[o.name] for o in p.options))
    return out
