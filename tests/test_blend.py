"""``wgan_gp_blend``: the generator's and pixel ridge's images blended, the weight chosen on the validation hold-out
(the end-to-end checks run in tests/test_pixels_layer.py, on its run with pixels layers and a hold-out)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from shared.errors import UserError
from shared.evaluation import at_size
from stage2_generate.compare.spec import load_compare
from stage2_generate.methods.blend import WEIGHTS, blend, choose_weight
from stage2_generate.watch import MIN_HOLDOUT


def _neg_mse(truth):
    """Per-image values, higher is better."""
    return lambda rec: -((rec - truth) ** 2).mean(axis=(1, 2, 3))


def test_the_weight_grid_runs_from_pixel_ridge_to_the_generator():
    assert WEIGHTS[0] == 0.0 and WEIGHTS[-1] == 1.0 and len(WEIGHTS) == 11
    a, b = np.full((2, 3, 4, 4), 0.2, np.float32), np.full((2, 3, 4, 4), 0.8, np.float32)
    np.testing.assert_allclose(blend(a, b, 1.0), a)
    np.testing.assert_allclose(blend(a, b, 0.0), b)
    np.testing.assert_allclose(blend(a, b, 0.3), 0.3 * 0.2 + 0.7 * 0.8, atol=1e-6)


def test_the_weight_follows_whichever_image_is_closer_and_mixes_independent_errors(rng):
    truth = rng.uniform(0.3, 0.7, (20, 3, 8, 8)).astype(np.float32)
    noisy = lambda sd: np.clip(truth + rng.normal(0, sd, truth.shape), 0, 1).astype(np.float32)
    assert choose_weight(truth, noisy(0.1), _neg_mse(truth))[0] == (1.0, "whole")  # the generator exact
    assert choose_weight(noisy(0.1), truth, _neg_mse(truth))[0] == (0.0, "whole")  # pixel ridge exact
    # two estimates with independent errors of one size: their mean is better than either
    (weight, mode), record = choose_weight(noisy(0.1), noisy(0.1), _neg_mse(truth))
    scores = record["validation"]
    assert 0.3 <= weight <= 0.7 and mode == "whole" and record["beyond_noise"] and record["gain_low"] > 0
    assert scores[f"whole {weight:.1f}"] > max(scores["whole 0.0"], scores["whole 1.0"])
    assert set(scores) == {f"whole {w:.1f}" for w in WEIGHTS}  # no coarse size given: whole images only


def test_the_generator_stays_unless_a_blend_beats_it_beyond_the_hold_outs_noise(rng):
    """The tick rule: a candidate better on the mean but not beyond the paired bootstrap's noise, or a hold-out of
    fewer than MIN_HOLDOUT images, leaves the generator's own image (a = 1)."""
    truth = rng.uniform(0.3, 0.7, (12, 3, 8, 8)).astype(np.float32)
    generated = np.clip(truth + rng.normal(0, 0.1, truth.shape), 0, 1).astype(np.float32)
    decoded = generated.copy()
    decoded[0] = truth[0]  # pixel ridge better on one image alone: a higher mean, not beyond noise
    choice, record = choose_weight(generated, decoded, _neg_mse(truth))
    assert record["highest"] == "whole 0.0" and not record["beyond_noise"] and choice == (1.0, "whole")
    few = slice(0, MIN_HOLDOUT - 1)  # pixel ridge exact on every image, but too few of them
    choice, record = choose_weight(generated[few], truth[few], _neg_mse(truth[few]))
    assert choice == (1.0, "whole") and record["holdout_too_small"] and record["holdout_images"] == MIN_HOLDOUT - 1


def test_the_coarse_mode_blends_the_coarse_parts_and_keeps_the_generators_detail(rng):
    """With a coarse size, the truth's coarse part from pixel ridge and its detail from the generator is what the
    coarse mode at weight 0 rebuilds; whole images cannot, so it is chosen."""
    truth = rng.uniform(0.2, 0.8, (12, 3, 16, 16)).astype(np.float32)
    low = lambda x: at_size(at_size(x, 4, clip=False), 16, clip=False)
    generated = np.clip(truth - low(truth) + low(rng.uniform(0.2, 0.8, truth.shape).astype(np.float32)), 0, 1)
    decoded = low(truth)  # right coarse content, no detail
    np.testing.assert_allclose(blend(generated, decoded, 1.0, coarse=4), generated, atol=1e-6)
    rebuilt = blend(generated, decoded, 0.0, coarse=4)
    assert np.abs(rebuilt - truth).mean() < 0.5 * min(np.abs(generated - truth).mean(), np.abs(decoded - truth).mean())
    (weight, mode), record = choose_weight(generated, decoded, _neg_mse(truth), coarse=4)
    assert (weight, mode) == (0.0, "coarse") and len(record["validation"]) == 2 * len(WEIGHTS)
    assert choose_weight(generated, decoded, _neg_mse(truth), coarse=16)[0][1] == "whole"  # no coarser part


def test_a_tie_keeps_the_generator_side_and_the_whole_images():
    same = np.full((MIN_HOLDOUT, 3, 8, 8), 0.5, np.float32)
    choice, record = choose_weight(same, same, lambda rec: np.full(len(rec), 0.25), coarse=4)
    assert choice == (1.0, "whole") and record["highest"] == "whole 1.0"


def test_a_compare_of_the_blend_needs_eval_blend_on(tmp_path, tiny_config):
    spec = tmp_path / "cmp.yaml"
    spec.write_text(yaml.safe_dump({"name": "b", "base": tiny_config.name, "variants": {"a": {}},
                                    "also": ["pixel_ridge", "wgan_gp_blend"]}))
    with pytest.raises(UserError, match="set eval.blend: true"):
        load_compare(spec)
    assert load_compare(spec, ["eval.blend=true"]).also == ["pixel_ridge", "wgan_gp_blend"]
    with pytest.raises(UserError, match="holds none out"):
        load_compare(spec, ["eval.blend=true", "eval.validation_fraction=0"])
