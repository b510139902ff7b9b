"""``wgan_gp_blend``: the generator's and pixel ridge's images blended, the weight chosen on the validation hold-out
(the end-to-end checks run in tests/test_pixels_layer.py, on its run with pixels layers and a hold-out)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from shared.errors import UserError
from stage2_generate.compare.spec import load_compare
from stage2_generate.methods.blend import WEIGHTS, blend, choose_weight


def _neg_mse(truth):
    return lambda rec: -float(((rec - truth) ** 2).mean())


def test_the_weight_grid_runs_from_pixel_ridge_to_the_generator():
    assert WEIGHTS[0] == 0.0 and WEIGHTS[-1] == 1.0 and len(WEIGHTS) == 11
    a, b = np.full((2, 3, 4, 4), 0.2, np.float32), np.full((2, 3, 4, 4), 0.8, np.float32)
    np.testing.assert_allclose(blend(a, b, 1.0), a)
    np.testing.assert_allclose(blend(a, b, 0.0), b)
    np.testing.assert_allclose(blend(a, b, 0.3), 0.3 * 0.2 + 0.7 * 0.8, atol=1e-6)


def test_the_weight_follows_whichever_image_is_closer_and_mixes_independent_errors(rng):
    truth = rng.uniform(0.3, 0.7, (20, 3, 8, 8)).astype(np.float32)
    noisy = lambda sd: np.clip(truth + rng.normal(0, sd, truth.shape), 0, 1).astype(np.float32)
    assert choose_weight(truth, noisy(0.1), _neg_mse(truth))[0] == 1.0  # the generator exact: all generator
    assert choose_weight(noisy(0.1), truth, _neg_mse(truth))[0] == 0.0  # pixel ridge exact: all pixel ridge
    # two estimates with independent errors of one size: their mean is better than either
    weight, scores = choose_weight(noisy(0.1), noisy(0.1), _neg_mse(truth))
    assert 0.3 <= weight <= 0.7 and scores[f"{weight:.1f}"] > max(scores["0.0"], scores["1.0"])
    assert set(scores) == {f"{w:.1f}" for w in WEIGHTS}


def test_a_tie_keeps_the_generator_side():
    same = np.full((3, 3, 4, 4), 0.5, np.float32)
    assert choose_weight(same, same, lambda rec: 0.25)[0] == 1.0


def test_a_compare_of_the_blend_needs_eval_blend_on(tmp_path, tiny_config):
    spec = tmp_path / "cmp.yaml"
    spec.write_text(yaml.safe_dump({"name": "b", "base": tiny_config.name, "variants": {"a": {}},
                                    "also": ["pixel_ridge", "wgan_gp_blend"]}))
    with pytest.raises(UserError, match="set eval.blend: true"):
        load_compare(spec)
    assert load_compare(spec, ["eval.blend=true"]).also == ["pixel_ridge", "wgan_gp_blend"]
