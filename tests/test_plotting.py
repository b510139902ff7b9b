"""The reconstruction grid: every image in its own cell of one mosaic, at one size, on white."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shared.plotting import _mosaic, image_grid


def test_each_image_lands_in_its_cell_at_the_largest_size_with_white_gaps(rng):
    rows = {"true": rng.random((3, 3, 4, 4)), "grey, half size": rng.random((3, 1, 2, 2))}
    mosaic, (h, w), gap = _mosaic(rows, 2)  # two columns of three images
    assert (h, w) == (4, 4) and gap == 1 and mosaic.shape == (4 + 1 + 4, 4 + 1 + 4, 3)
    np.testing.assert_allclose(mosaic[0:4, 5:9], rows["true"][1].transpose(1, 2, 0), rtol=1e-6)
    grey = np.kron(rows["grey, half size"][0, 0], np.ones((2, 2)))  # nearest neighbour, every channel alike
    for channel in range(3):
        np.testing.assert_allclose(mosaic[5:9, 0:4, channel], grey, rtol=1e-6)
    assert (mosaic[4] == 1).all() and (mosaic[:, 4] == 1).all()  # the gaps are white


def test_values_outside_the_unit_range_are_clipped_and_the_grid_is_written(tmp_path, rng):
    rows = {"true": rng.random((2, 3, 8, 8)), "raw": rng.normal(0.5, 2.0, (2, 3, 8, 8))}
    mosaic, _, _ = _mosaic(rows, 2)
    assert mosaic.min() >= 0 and mosaic.max() <= 1
    image_grid(rows, tmp_path / "grid.png", title="two rows")
    assert Image.open(tmp_path / "grid.png").size[0] > 100
