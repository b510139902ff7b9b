"""Before a long CPU training, stage 2 says how long it will take and which settings cut it."""

from __future__ import annotations

import logging

from shared.config import load_config
from stage2_generate.train import projection


def test_a_gpu_sized_run_on_a_cpu_names_the_settings_that_cut_it(tiny_config):
    gc = load_config(None).generator  # the library's defaults: GPU-sized
    level, text = projection("generator", 4.0, gc.iterations - 3, "cpu", gc)
    assert level == logging.WARNING
    assert f"the {gc.iterations - 3} steps left take about {4.0 * (gc.iterations - 3) / 60:.0f} min on this CPU" in text
    for setting in ("generator.iterations", "generator.n_critic", "generator.batch_size", "configs/demo.yaml"):
        assert setting in text
    assert f"(now {gc.n_critic})" in text


def test_a_short_run_or_a_gpu_gets_the_projection_alone(tiny_config):
    gc = load_config(tiny_config).generator
    level, text = projection("generator", 0.5, 600, "cpu", gc)  # 5 min
    assert level == logging.INFO and "about 5 min" in text and "cut it" not in text
    level, text = projection("generator", 4.0, 5000, "cuda", load_config(None).generator)
    assert level == logging.INFO and "cut it" not in text
