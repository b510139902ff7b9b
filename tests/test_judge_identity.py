"""The judge is identified by its weights, not by how the config spells them: a judge equal to a
network a loss looks through is refused under any spelling, and a comparison never mixes judges."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from conftest import run_cli, write_tiny_config
from shared.config import load_config
from shared.errors import UserError
from shared.evaluation import check_judge_independent
from shared.featnet import build_model, weights_digest


def _alexnet_file(path, seed: int = 5):
    torch.save(build_model("alexnet", f"random:{seed}").state_dict(), path)
    return path


def _judge_and_perceptual(tiny_config, judge: str, perceptual: str):
    return load_config(tiny_config, ["eval.judge_network=alexnet", f"eval.judge_weights={judge}",
                                     "generator.perceptual_network=alexnet", "generator.perceptual_layers=[conv1]",
                                     f"generator.perceptual_weights={perceptual}"])


def test_digest_follows_the_weights_not_their_spelling(tmp_path):
    a = _alexnet_file(tmp_path / "a.pth")
    shutil.copy(a, tmp_path / "copy.pth")
    assert weights_digest("alexnet", str(a)) == weights_digest("alexnet", str(tmp_path / "copy.pth")) \
        == weights_digest("alexnet", "random:5")
    assert weights_digest("alexnet", "random:6") != weights_digest("alexnet", "random:5")


def test_a_copied_pth_shared_by_judge_and_perceptual_loss_is_refused(tiny_config, tmp_path):
    a = _alexnet_file(tmp_path / "judge.pth")
    b = shutil.copy(a, tmp_path / "perceptual.pth")
    cfg = _judge_and_perceptual(tiny_config, str(a), str(b))  # the labels differ: the config loads
    with pytest.raises(UserError, match=r"^the judge .* has the same weights \(sha256 [0-9a-f]{16}\) as the network "
                                        r"the perceptual loss"):
        check_judge_independent(cfg)
    cfg = _judge_and_perceptual(tiny_config, str(a), "random:6")  # other weights: independent
    assert check_judge_independent(cfg) == weights_digest("alexnet", str(a))


def test_imagenet_and_its_cached_file_are_one_network(tiny_config, tmp_path, monkeypatch):
    from shared.featnet import imagenet_weights_path

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached, _ = imagenet_weights_path("alexnet")
    cached.parent.mkdir(parents=True)
    _alexnet_file(cached)  # stands in for the downloaded ImageNet file
    cfg = _judge_and_perceptual(tiny_config, "imagenet", str(cached))
    with pytest.raises(UserError, match="has the same weights"):
        check_judge_independent(cfg)


def test_stage2_refuses_a_judge_that_is_the_perceptual_network_in_one_line(tiny_finished, tmp_path):
    a = _alexnet_file(tmp_path / "judge.pth")
    b = shutil.copy(a, tmp_path / "perceptual.pth")
    shutil.copytree(tiny_finished.folder / "work", tmp_path / "work")
    config = write_tiny_config(tmp_path, tiny_finished.data)
    r = run_cli("stage2_generate", "run", "--config", str(config), "--set", "eval.judge_network=alexnet",
                "--set", f"eval.judge_weights={a}", "--set", "generator.perceptual_network=alexnet",
                "--set", "generator.perceptual_layers=[conv1]", "--set", f"generator.perceptual_weights={b}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: the judge (eval.judge_network/judge_weights: alexnet")
    assert not (tmp_path / "results").exists()  # refused before anything is written


def test_a_compare_file_mixing_judges_is_refused(tiny_finished, tmp_path):
    base = write_tiny_config(tmp_path, tiny_finished.data)
    spec = {"name": "judges", "base": str(base),
            "variants": {"usual": {}, "other_judge": {"eval.judge_weights": "random:2"}}}
    path = tmp_path / "judges.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("stage2_generate", "compare", "--config", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "is scored by another judge" in last and "'other_judge'" in last and "'usual'" in last
    assert not (tmp_path / "results" / "compare").exists()


def test_one_judge_across_variants_whatever_spells_its_weights_or_the_other_networks(tiny_config, tmp_path):
    """compare's check that its variants share one judge: the judge's identity does not depend on the other
    networks' weights, and a judge file holding random:1's weights is random:1."""
    from types import SimpleNamespace

    from stage2_generate.compare.runner import check_one_judge

    def variant(name, *sets):
        return SimpleNamespace(name=name, cfg=load_config(tiny_config, list(sets)))

    judge_file = _alexnet_file(tmp_path / "judge.pth", seed=1)
    base = variant("base", "eval.judge_weights=random:1")
    check_one_judge([base, variant("imagenet features", "eval.judge_weights=random:1", "features.weights=imagenet")])
    check_one_judge([base, variant("judge as a file", f"eval.judge_weights={judge_file}")])
    with pytest.raises(UserError, match="'other seed' is scored by another judge"):
        check_one_judge([base, variant("other seed", "eval.judge_weights=random:2")])
    # a missing feature-network file is not another judge: the input check names the file instead
    from stage2_generate.compare.runner import check_variant_inputs

    missing = variant("missing file", "eval.judge_weights=random:1", f"features.weights={tmp_path / 'gone.pth'}")
    check_one_judge([base, missing])
    with pytest.raises(UserError, match=r"variant 'missing file': .*gone\.pth.* does not exist"):
        check_variant_inputs([missing])
