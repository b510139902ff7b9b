"""Every decimal number (``0.671``, ``5.9G``, ``x1.81``) and percentage in the README and the guides
comes from a committed output its document names in ``SOURCES`` (files under ``results/reference/``
that commands wrote: the same digits in a table or text, or a longer value in a JSON or CSV file
rounded to them), or from the allow-list below: a setting or version, or arithmetic this test
recomputes. Integers (image counts, sizes in px, seconds of a run) are not checked. A number that
fails: regenerate the output that holds it and commit it, or remove the number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)? ?%|(?<![\d.])\d+\.\d+(?!\.?\d)")
_DEMO = ["demo/reconstruction.md", "demo/decoding.md", "demo/validation.md", "demo/summary.md"]
_PRESETS = [f"{p}/{f}" for p in ("small_strokes", "binary_shapes") for f in ("reconstruction.md", "validation.md",
                                                                          "decoding.md", "summary.md")]
# each document's sources, under results/reference/ (never the hand-written readings there)
SOURCES = {
    "README.md": [*_DEMO, *_PRESETS, "demo/timing.txt", "demo/disk_usage.txt", "demo_unit/decoding.md",
                  "demo/metrics.json", "bench/ridge.txt"],
    "benchmarks_and_tests.md": ["bench/ridge.json", "bench/ridge.txt", "bench/whole_layer.txt", "bench/whole_layer_decoding.md",
                                "demo/bench_stage2.json", *_DEMO],
    "cluster.md": ["bench/compare_jobs.txt"],
    "compare.md": ["compare/*/table.md", "compare/*/stats.md"],
    "how_it_works.md": [*_DEMO],
    "outputs.md": [*_DEMO],
    "real_data.md": ["bench/ridge.json", "bench/whole_layer.txt", "demo/bench_stage2.json"],
    "simulator.md": ["bench/simulator.txt", *_DEMO],
    "small_datasets.md": [*_DEMO, *_PRESETS, "compare/settings_*/table.md"],
    "troubleshooting.md": [],
}

# (doc, number): what it is. Settings and versions, stated where they are set.
SETTINGS = {
    ("README.md", "3.11"): "the Python version the Makefile's environment uses",
    ("README.md", "3.12"): "bdpy's declared upper bound on Python",
    ("README.md", "7.3"): "MATLAB's file-format version",
    ("real_data.md", "7.3"): "MATLAB's file-format version",
    ("outputs.md", "1.5"): "SSIM's Gaussian window SD (shared/metrics.py)",
    ("outputs.md", "0.005"): "the PNG round-trip tolerance tests/test_stage2.py checks",
    ("benchmarks_and_tests.md", "0.005"): "the PNG round-trip tolerance tests/test_stage2.py checks",
    ("benchmarks_and_tests.md", "0.8"): "the VAE bound's threshold tests/test_methods.py checks",
    ("compare.md", "0.8"): "an export command's --cell value",
    ("how_it_works.md", "0.3"): "generator.condition_corr_min's default",
    ("how_it_works.md", "0.1"): "eval.validation_fraction's default",
    ("simulator.md", "0.3"): "the simulator's fixation jitter SD in degrees",
    ("simulator.md", "15 %"): "the simulator's trial gain SD",
    ("simulator.md", "0.22"): "simulation.reliability_median's default",
    ("simulator.md", "0.30"): "the upper bound on the default reliability tests/test_simulator.py checks",
    ("simulator.md", "5 %"): "simulation.luminance_share's default (0.05)",
    ("simulator.md", "2 %"): "simulation.colour_share's default (0.02)",
    ("small_datasets.md", "0.3"): "generator.rollback_lr_factor's default",
    ("small_datasets.md", "0.1"): "eval.validation_fraction's default",
    ("small_datasets.md", "80 %"): "the share of training images each of 5 cross-validation folds fits on",
    ("small_datasets.md", "10 %"): "eval.validation_fraction's default (0.1)",
}
# the settings' validation (PixCorr, SSIM) of wgan_gp, first ROI, as results/reference/compare/settings_*/table.csv
# hold them (docs/small_datasets.md averages them)
VAL = {
    ("demo", "1e-3"): (0.6011589081780232, 0.27678990172928014),
    ("demo", "3e-4"): (0.5936866422349814, 0.28129195899553083),
    ("small_strokes", "1e-3"): (0.4806947500264721, 0.12575768335918164),
    ("small_strokes", "3e-4"): (0.48888800447055686, 0.1668918822232925),
    ("binary_shapes", "1e-3"): (0.5764980279118669, 0.18988221472606162),
    ("binary_shapes", "3e-4"): (0.5717109134505265, 0.1780051727047548),
}
UNITS_DIR_REAL = 802816 + 401408 + 100352 + 4096 + 4096 + 1000  # configs/dir_real.yaml's layers at 224 px


def _mean_val(lr: str) -> float:
    return sum(sum(VAL[(s, lr)]) / 2 for s in ("demo", "small_strokes", "binary_shapes")) / 3


# (doc, number): expressions recomputed here, one per use (names: VAL, UNITS_DIR_REAL, _mean_val)
ARITHMETIC = {
    ("README.md", "0.03"): ["0.644 - 0.610"],  # VC's smallest gap, test minus out-of-fold profile correlation (fc7)
    ("README.md", "0.06"): ["0.531 - 0.473"],  # ... and its largest (conv3_4)
    ("README.md", "0.02"): ["1 / 50"],  # chance of top-1 among the demo's 50 test images
    ("benchmarks_and_tests.md", "0.71"): ["1 / 1.401"],  # s per iteration at 64 px (bench_stage2.json)
    ("benchmarks_and_tests.md", "4.1"): ["40.6 / 10000 * 1000"],  # ms per unit of the sparse decoder (ridge.json)
    ("benchmarks_and_tests.md", "0.003"): ["0.8521 - 0.8491"],  # himalaya minus dense_unit, fc (ridge.json)
    ("README.md", "0.003"): ["0.8521 - 0.8491"],  # the same, in the README
    ("benchmarks_and_tests.md", "3.0"): ["319.5 / 108.3"],  # dense_unit over himalaya, fc units/s (ridge.json)
    # himalaya's cost from its two rows (fc 10,000 units in 92.4 s, conv 20,000 in 117.4 s), per unit and fixed
    ("benchmarks_and_tests.md", "2.5"): ["(117.4 - 92.4) / 10000 * 1000"],  # ms per unit
    ("benchmarks_and_tests.md", "32.7"): ["5574.1 / 170.3"],  # the two conv rows' ratio

    ("benchmarks_and_tests.md", "2.9"): ["(1 + 5) * (11000 + 1) ** 2 * 4 / 1e9"],  # GB of voxel Gram matrices
    ("small_datasets.md", "0.001"): ["(sum(VAL['demo', '1e-3']) - sum(VAL['demo', '3e-4'])) / 2"],
    ("small_datasets.md", "0.008"): ["(sum(VAL['binary_shapes', '1e-3']) - sum(VAL['binary_shapes', '3e-4'])) / 2"],
    ("real_data.md", "1.31"): ["UNITS_DIR_REAL / 1e6"],  # million units
    ("real_data.md", "6.6"): ["1250 * UNITS_DIR_REAL * 4 / 1e9"],  # GB of float32 true features
    ("real_data.md", "3.2"): ["64 * 224 * 224 / 1e6"],  # conv1_2's units at 224 px, millions
    ("benchmarks_and_tests.md", "3.2"): ["64 * 224 * 224 / 1e6"],
    ("small_datasets.md", "0.439"): ["sum(VAL['demo', '1e-3']) / 2"],
    ("small_datasets.md", "0.303"): ["sum(VAL['small_strokes', '1e-3']) / 2"],
    ("small_datasets.md", "0.383"): ["sum(VAL['binary_shapes', '1e-3']) / 2"],
    ("small_datasets.md", "0.437"): ["sum(VAL['demo', '3e-4']) / 2"],
    ("small_datasets.md", "0.328"): ["sum(VAL['small_strokes', '3e-4']) / 2"],
    ("small_datasets.md", "0.375"): ["sum(VAL['binary_shapes', '3e-4']) / 2", "_mean_val('1e-3')"],
    ("small_datasets.md", "0.380"): ["_mean_val('3e-4')"],
}


def _source_values(doc: str) -> set[str]:
    """The numbers of ``doc``'s sources: as written, and (JSON, CSV) rounded to 0-4 decimals."""
    values: set[str] = set()
    for pattern in SOURCES[doc]:
        paths = sorted((ROOT / "results" / "reference").glob(pattern))
        assert paths, f"{doc}'s source {pattern} is not under results/reference/"
        for path in paths:
            for token in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", path.read_text()):
                values.add(token.lstrip("-"))
                if path.suffix in (".json", ".csv"):
                    x = abs(float(token))
                    values.update(f"{x:.{d}f}" for d in range(5))
    return values


def _numbers(doc: Path) -> list[tuple[int, str]]:
    """``(line, number)`` of every decimal number and percentage (written ``<n> %``) in ``doc``."""
    return [(i, m.group(0).rstrip("% ") + " %" if m.group(0).endswith("%") else m.group(0))
            for i, line in enumerate(doc.read_text().splitlines(), 1) for m in NUMBER.finditer(line)]


def _arithmetic_ok(number: str, expression: str) -> bool:
    decimals = len(number.split(".")[1]) if "." in number else 0
    names = {"VAL": VAL, "UNITS_DIR_REAL": UNITS_DIR_REAL, "_mean_val": _mean_val, "sum": sum}
    return f"{eval(expression, {'__builtins__': {}}, names):.{decimals}f}" == number  # noqa: S307


def test_every_number_in_the_readme_and_guides_comes_from_a_committed_output():
    allowed = set(SETTINGS) | set(ARITHMETIC)
    missing = []
    for doc in DOCS:
        values = _source_values(doc.name)
        for line, number in _numbers(doc):
            if (doc.name, number) in allowed or number.replace(" %", "") in values:
                continue
            missing.append(f"{doc.relative_to(ROOT)}:{line}: {number}")
    assert not missing, "numbers found in no source of their document nor the allow-list:\n" + "\n".join(missing)


def test_the_allow_list_is_true_and_in_use():
    held = "".join((ROOT / "results/reference/compare" / f"settings_{s}/table.csv").read_text()
                   for s in ("demo", "small_strokes", "binary_shapes"))
    assert all(repr(v) in held for pair in VAL.values() for v in pair), "VAL is not what the tables hold"
    assert set(SOURCES) == {d.name for d in DOCS}, "every document names its sources"
    for (doc, number), expressions in ARITHMETIC.items():
        for expression in expressions:
            assert _arithmetic_ok(number, expression), f"{doc}: {number} is not {expression}"
    found = {(doc.name, n) for doc in DOCS for _, n in _numbers(doc)}
    stale = [k for k in [*SETTINGS, *ARITHMETIC] if k not in found]
    assert not stale, f"allow-list entries no doc uses any more: {stale}"


@pytest.mark.parametrize("text, want", [("PixCorr 0.671 vs 0.650, 80 % of units, torch 2.14.1, 1e-3, 26 GB",
                                         ["0.671", "0.650", "80 %"]),
                                        ("436.17s, x1.81, 5.9G, 12.5%, conv5_4, sub-01, ends 0.30.", ["436.17", "1.81", "5.9",
                                                                                                     "12.5 %", "0.30"])])
def test_the_number_finder_sees_decimals_and_percentages_only(tmp_path, text, want):
    doc = tmp_path / "x.md"
    doc.write_text(text)
    assert [n for _, n in _numbers(doc)] == want
