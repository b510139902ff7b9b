"""The tick that reconstructs knows its own noise (``watch.TickChooser``): an earlier tick replaces the last
only when it wins beyond a paired bootstrap over the held-out images; a hold-out under ``MIN_HOLDOUT``
images keeps the last tick and says so. Also: the dead-output rule judges raw (unclamped) outputs, and
``eval.score_size`` is part of the generator's training key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stage2_generate.watch import MIN_HOLDOUT, TickChooser, paired_gain


def _curve(ticks: dict[int, np.ndarray]) -> TickChooser:
    chooser = TickChooser("pixcorr_ssim")
    for step, values in ticks.items():
        chooser.add(step, values)
    return chooser


def test_an_early_peak_within_noise_keeps_the_last_tick():
    base = np.linspace(0.30, 0.50, 12)
    # step 50 is highest on average (+0.009) but its gain flips sign from image to image
    noise = np.array([0.20, -0.18, 0.15, -0.10, 0.05, -0.12, 0.10, 0.02, -0.05, 0.08, -0.07, 0.03])
    choice = _curve({50: base + noise, 100: base - 0.01, 600: base}).choice()
    assert choice.highest_step == 50 and choice.gain > 0  # the peak is there, on average ...
    assert choice.gain_low < 0 and not choice.beyond_noise  # ... but within noise
    assert choice.step == 600 and choice.score == pytest.approx(base.mean())
    assert not choice.holdout_too_small and choice.holdout_images == 12
    assert "within noise: the last tick reconstructs" in choice.reason()


def test_an_early_peak_beyond_noise_is_chosen():
    base = np.linspace(0.30, 0.50, 12)
    rng = np.random.default_rng(0)
    early = base + 0.05 + 0.01 * rng.standard_normal(12)  # better on every image
    choice = _curve({50: early, 100: base + 0.01, 600: base}).choice()
    assert choice.step == 50 and choice.beyond_noise and choice.gain_low > 0
    assert choice.record()["step"] == 50 and choice.record()["beyond_noise"] is True
    assert "beyond noise: it reconstructs" in choice.reason()


def test_a_hold_out_under_the_minimum_falls_back_to_the_last_tick():
    n = MIN_HOLDOUT - 1
    choice = _curve({50: np.full(n, 0.9), 600: np.full(n, 0.1)}).choice()  # a huge gain, but too few images
    assert choice.step == 600 and choice.holdout_too_small and choice.holdout_images == n
    assert choice.gain_low is None and f"fewer than {MIN_HOLDOUT}" in choice.reason()
    record = choice.record()
    assert record["holdout_too_small"] is True and f"fewer than {MIN_HOLDOUT} held-out images" in record["tick_rule"]


def test_no_hold_out_keeps_the_last_tick_and_says_so():
    choice = TickChooser(None).choice(last_step=600)
    assert choice.step == 600 and not choice.holdout_too_small
    assert choice.record()["tick_rule"].startswith("No validation hold-out")


def test_the_ticks_survive_a_checkpoint_and_ties_keep_the_first():
    a = _curve({2: np.full(MIN_HOLDOUT, 0.5), 4: np.full(MIN_HOLDOUT, 0.5)})
    assert a.highest[0] == 2  # equal scores: the first of them
    b = TickChooser("pixcorr_ssim").load(a.state())
    assert b.highest == a.highest and b.last == a.last
    assert TickChooser("ssim").load(a.state()).last is None  # ticks scored by another metric are not taken


def test_min_holdout_keeps_false_wins_near_the_nominal_rate():
    """MIN_HOLDOUT's reason, measured: with no true difference between two ticks, a bootstrap 'win' happens
    far more often than 5% on a few images (watch.py's comment), and under 10% from MIN_HOLDOUT images on."""
    rng = np.random.default_rng(1)

    def false_wins(n: int, trials: int = 300) -> float:
        return float(np.mean([paired_gain(rng.standard_normal(n), np.zeros(n))[1] > 0 for _ in range(trials)]))

    assert false_wins(2) > 0.2
    assert false_wins(MIN_HOLDOUT) < 0.12


def test_the_dead_output_rule_judges_raw_outputs():
    """A generator pushed above 1 whose raw output still varies is alive (a clamp would show it flat); one
    that no longer varies is dead either way; the training loop hands Health the raw outputs."""
    from stage2_generate.models import Generator, generate
    from stage2_generate.train import raw_outputs
    from stage2_generate.watch import Health

    torch.manual_seed(0)
    G = Generator([(4,)], 8, 4, 3, mean_image=np.full((3, 8, 8), 0.5, dtype=np.float32)).eval()
    for conv in G.to_image:
        conv.reset_parameters()
    with torch.no_grad():
        G.to_image[-1].bias.fill_(5.0)  # every pixel far above 1
    z = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    raw, clamped = raw_outputs(G, [z]), generate(G, [z], "cpu")
    assert raw.min() > 1 and np.all(clamped == 1) and not G.training  # the mode is left as it was
    reference = 0.2
    assert Health(reference).dead_reason({"out": raw}) is None
    assert "not spreading out" in Health(reference).dead_reason({"out": clamped})


def test_score_size_enters_the_training_key_only_with_a_hold_out(tmp_path):
    from conftest import write_tiny_config
    from shared.config import load_config
    from stage2_generate.generator_files import training_key

    path = write_tiny_config(tmp_path, tmp_path / "data")

    def key(*sets):
        return training_key(load_config(path, list(sets)))

    assert key("eval.score_size=16") != key("eval.score_size=32") != key()
    assert key("eval.validation_fraction=0", "eval.score_size=16") == key("eval.validation_fraction=0",
                                                                           "eval.score_size=32")


def test_a_loss_added_later_leaves_earlier_generators_reusable(tmp_path, monkeypatch):
    """With ``generator.loss_ssim`` off, a generator's key is what it was before the key existed (its checkpoints
    stay reusable); switched on, it is another training."""
    import dataclasses

    from conftest import write_tiny_config
    from shared.config import load_config
    from stage2_generate import generator_files

    cfg = load_config(write_tiny_config(tmp_path, tmp_path / "data"))
    now = generator_files.training_key(cfg)
    assert generator_files.training_key(dataclasses.replace(
        cfg, generator=dataclasses.replace(cfg.generator, loss_ssim=1.0))) != now
    asdict = dataclasses.asdict
    monkeypatch.setattr(dataclasses, "asdict", lambda obj: {k: v for k, v in asdict(obj).items() if k != "loss_ssim"})
    assert generator_files.training_key(cfg) == now  # as a GeneratorConfig without the key hashed
