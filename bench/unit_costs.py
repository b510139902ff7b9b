"""A decoder's fixed cost and cost per unit, fitted to its wall times at several unit counts.

The wall time of a decoder on ``n`` units of a layer is modelled as ``fixed + per_unit * n``:
the fixed part is what all units share (a Gram or kernel matrix, its factorisations, voxel
statistics, penalty search on a sample), the per-unit part what each unit adds (its selection,
its solve, its predictions). Two methods timed at one small unit count compare mostly their
fixed parts; their per-unit costs, and their times projected to a whole layer, compare them at
equal footing. Plain numpy, no torch: the benchmark's parent process and the tests import it.

Input: ``units`` ``(n_runs,)`` unit counts, ``seconds`` ``(n_runs,)`` wall times, at least two
distinct counts; output: a ``UnitCost`` (seconds, seconds per unit, the pairs it was fitted on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UnitCost:
    """``seconds(n) = fixed_s + per_unit_s * n``, least squares on ``pairs`` ``((units, seconds), ...)``."""

    fixed_s: float
    per_unit_s: float
    pairs: tuple[tuple[int, float], ...]

    def seconds(self, units: float) -> float:
        """Projected wall time on ``units`` units."""
        return self.fixed_s + self.per_unit_s * units

    @property
    def max_rel_residual(self) -> float:
        """Largest |measured - fitted| / measured over the pairs (0 for two pairs: the line
        passes through both, so linearity is checked only from three counts on)."""
        return max(abs(s - self.seconds(n)) / s if s > 0 else 0.0 for n, s in self.pairs)

    def as_dict(self, layer_units: int | None = None) -> dict:
        out = {"fixed_s": round(self.fixed_s, 3), "ms_per_unit": float(f"{self.per_unit_s * 1e3:.6g}"),
               "pairs": [[n, s] for n, s in self.pairs], "max_rel_residual": round(self.max_rel_residual, 4)}
        if layer_units is not None:
            out["layer_units"] = layer_units
            out["layer_s"] = round(self.seconds(layer_units), 2)
        return out


def fit_unit_cost(units, seconds) -> UnitCost:
    """Ordinary least squares of ``seconds`` on ``[1, units]``.

    Refuses (ValueError, naming what was given) fewer than two distinct unit counts (a
    single count cannot separate the fixed cost from the per-unit cost), arrays of
    different lengths, non-positive or non-integer unit counts, and negative or non-finite times.
    The fit itself is not clipped: a per-unit cost at or below zero says that the
    counts were too close for the timing noise, and the caller reports it as such.
    """
    n = np.asarray(units, dtype=float).ravel()
    s = np.asarray(seconds, dtype=float).ravel()
    if n.shape != s.shape:
        raise ValueError(f"units and seconds must pair up; {n.size} unit counts and {s.size} times were given")
    if not (np.all(np.isfinite(n)) and np.all(n > 0) and np.all(n == np.round(n))):
        raise ValueError(f"unit counts must be positive integers; {n.tolist()} was given")
    if not (np.all(np.isfinite(s)) and np.all(s >= 0)):
        raise ValueError(f"times must be finite and non-negative; {s.tolist()} was given")
    if np.unique(n).size < 2:
        raise ValueError("fixed and per-unit cost need times at two or more distinct unit counts; "
                         f"counts {sorted(set(int(v) for v in n))} were given")
    # centred, so a large count (a whole layer) beside small ones does not cost precision
    dn = n - n.mean()
    per_unit = float((dn * (s - s.mean())).sum() / (dn * dn).sum())
    fixed = float(s.mean() - per_unit * n.mean())
    return UnitCost(fixed, per_unit, tuple((int(a), float(b)) for a, b in zip(n, s)))


def cost_ratio(reference: UnitCost, other: UnitCost) -> float | None:
    """How many times ``reference``'s per-unit cost is ``other``'s (above 1: ``other`` is cheaper
    per unit); None when either per-unit cost is not positive (below the timing noise)."""
    if reference.per_unit_s <= 0 or other.per_unit_s <= 0:
        return None
    return reference.per_unit_s / other.per_unit_s
