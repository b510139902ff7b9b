"""The benchmark's cost model (``bench/unit_costs.py``): fixed cost plus cost per unit, by least
squares on (units, seconds) pairs, and the ratio of per-unit costs the README quotes."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from conftest import ROOT

# bench/ is scripts, not a package: load the module from its file (registered first: dataclasses look it up)
_spec = importlib.util.spec_from_file_location("bench_unit_costs", ROOT / "bench" / "unit_costs.py")
unit_costs = sys.modules.setdefault("bench_unit_costs", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(unit_costs)


def test_exact_line_is_recovered_and_projected_to_a_whole_layer():
    units = [1000, 4000, 10000, 401_408]
    seconds = [12.5 + 2.9e-3 * n for n in units]
    fit = unit_costs.fit_unit_cost(units, seconds)
    assert fit.fixed_s == pytest.approx(12.5, rel=1e-9)
    assert fit.per_unit_s == pytest.approx(2.9e-3, rel=1e-9)
    assert fit.seconds(2_000_000) == pytest.approx(12.5 + 2.9e-3 * 2_000_000, rel=1e-9)
    assert fit.max_rel_residual < 1e-9
    d = fit.as_dict(401_408)
    assert d["pairs"] == [[n, s] for n, s in zip(units, seconds)]
    assert d["ms_per_unit"] == pytest.approx(2.9) and d["layer_s"] == pytest.approx(12.5 + 2.9e-3 * 401_408, abs=0.01)


def test_noisy_times_give_the_least_squares_line(rng):
    units = np.array([1000, 1000, 4000, 10000, 20000])
    seconds = 60 + 2.5e-3 * units + rng.normal(0, 1.5, units.size)
    fit = unit_costs.fit_unit_cost(units, seconds)
    slope, intercept = np.polyfit(units, seconds, 1)
    assert fit.per_unit_s == pytest.approx(slope, rel=1e-8) and fit.fixed_s == pytest.approx(intercept, rel=1e-8)
    worst = np.max(np.abs(seconds - (intercept + slope * units)) / seconds)
    assert fit.max_rel_residual == pytest.approx(worst, rel=1e-8) and fit.max_rel_residual > 0


def test_ratio_is_of_per_unit_costs_not_of_rates_at_one_count():
    # the reference is cheaper at 1,000 units (small fixed cost) but costs 3x per unit
    ref = unit_costs.fit_unit_cost([1000, 10000], [4 + 9e-3 * 1000, 4 + 9e-3 * 10000])
    ours = unit_costs.fit_unit_cost([1000, 10000], [12 + 3e-3 * 1000, 12 + 3e-3 * 10000])
    assert ref.seconds(1000) < ours.seconds(1000)
    assert unit_costs.cost_ratio(ref, ours) == pytest.approx(3.0)
    flat = unit_costs.fit_unit_cost([1000, 10000], [20.0, 19.0])  # noise made the slope negative
    assert unit_costs.cost_ratio(ref, flat) is None and unit_costs.cost_ratio(flat, ours) is None


@pytest.mark.parametrize("units, seconds, match", [
    ([1000], [13.4], "two or more distinct unit counts"),
    ([1000, 1000, 1000], [13.4, 13.6, 13.5], r"two or more distinct unit counts; counts \[1000\]"),
    ([1000, 4000], [13.4], "must pair up"),
    ([0, 4000], [1.0, 2.0], "positive integers"),
    ([1000.5, 4000], [1.0, 2.0], "positive integers"),
    ([1000, 4000], [1.0, float("nan")], "finite and non-negative"),
])
def test_refuses_what_cannot_separate_fixed_from_per_unit_cost(units, seconds, match):
    with pytest.raises(ValueError, match=match):
        unit_costs.fit_unit_cost(units, seconds)
