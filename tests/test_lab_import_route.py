"""The README's lab-import route, end to end on the tiny experiment: stage 1 and ``export-lab`` in one
experiment make lab files; a new experiment imports them (``import-lab`` true_features and decoded) and runs
``stage2_generate run`` under the defaults without stage 1. Its store has no out-of-fold features and no
decoded hold-out, so stage 2 trains on true features without a hold-out, says so in one line, and records it;
a stage-1 store is left as it is."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_tiny_config
from shared.config import load_config
from shared.errors import UserError
from shared.store import ExperimentStore
from stage2_generate.imported import adapt

NOTE = "the generator trains on true features (generator.train_inputs=true, not oof"


@pytest.fixture(scope="module")
def lab_route(tmp_path_factory):
    """``(source config, imported config, lab root, the imported experiment's stage-2 result)``."""
    folder = tmp_path_factory.mktemp("lab_route")
    data, lab = folder / "data", folder / "lab"
    (folder / "source").mkdir()
    (folder / "imported").mkdir()
    source = write_tiny_config(folder / "source", data)
    imported = write_tiny_config(folder / "imported", data, experiment="from_lab")  # its own experiment
    for args in (("run", "--config", str(source)),
                 ("export-lab", "--config", str(source), "--set", f"lab.root={lab}"),
                 *(("import-lab", "--config", str(imported), "--set", f"lab.root={lab}", "--set",
                    f"lab.import_kind={kind}") for kind in ("true_features", "decoded"))):
        r = run_cli("stage1_decode", *args)
        assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("stage2_generate", "run", "--config", str(imported))
    return source, imported, lab, r


def test_stage2_runs_on_imported_features_under_the_defaults(lab_route):
    _, imported, lab, r = lab_route
    assert r.returncode == 0, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if "imported from lab files" in line]
    assert len(said) == 1 and NOTE in said[0] and "no validation hold-out" in said[0], said
    cfg = load_config(imported)
    metrics = json.loads((cfg.results_path / "metrics.json").read_text())
    info = metrics["reconstruction_info"]
    assert info["lab_import"]["imported_from"] == str(lab)
    assert info["lab_import"]["train_inputs"] == {"configured": "oof", "used": "true"}
    assert info["lab_import"]["validation_fraction"] == {"configured": 0.1, "used": 0.0}
    assert info["generator"]["train_inputs"] == "true"  # the tables' own record says what trained
    assert info["validation"]["n_images"] == 0 and info["validation"]["n_train_images"] == 60
    assert {"wgan_gp", "wgan_gp_true_features"} <= set(metrics["reconstruction"]["sub-01"])
    assert all(-1 <= row["pixcorr"] <= 1 for row in metrics["reconstruction"]["sub-01"].values())
    # every imported test image was reconstructed and scored
    per_image = json.loads((cfg.results_path / "per_image.json").read_text())
    with ExperimentStore(cfg).open_decoded("sub-01", "VC", "fc7", "natural") as arr:
        test_names = list(arr.names)
    assert len(test_names) == 8 and per_image["natural"]["sub-01"]["wgan_gp"]["names"] == test_names
    summary = (cfg.results_path / "summary.md").read_text()
    assert NOTE in summary and "imported lab files hold no decoded held-out training images" in summary


def test_the_same_settings_given_compute_the_same_numbers(lab_route, tmp_path):
    """Nothing hidden: the imported run is the run with ``train_inputs=true`` and no hold-out set by hand (the
    same generator, reused, and the same scores), and that run needs no note."""
    _, imported, _, first = lab_route
    assert first.returncode == 0, first.stderr[-3000:]
    r = run_cli("stage2_generate", "run", "--config", str(imported), "--set", "generator.train_inputs=true",
                "--set", "eval.validation_fraction=0", "--set", f"results_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "imported from lab files" not in r.stderr and "reusing its step-4 generator" in r.stderr
    cfg = load_config(imported)
    by_hand = json.loads((tmp_path / cfg.experiment / "metrics.json").read_text())
    routed = json.loads((cfg.results_path / "metrics.json").read_text())
    assert by_hand["reconstruction"] == routed["reconstruction"]
    assert by_hand["result_key"] == routed["result_key"]  # the key of what was computed
    assert "lab_import" not in by_hand["reconstruction_info"]


def test_a_stage1_store_is_left_as_it_is(lab_route):
    source, imported, _, _ = lab_route
    cfg = load_config(source)
    store = ExperimentStore(cfg)
    # out-of-fold and hold-out features there: the config itself
    assert adapt(cfg, store)[0] is cfg and adapt(cfg, store)[1] is None
    cfg_b = load_config(imported)
    mixed, record = adapt(load_config(imported, ["generator.train_inputs=mix"]), ExperimentStore(cfg_b))
    assert (mixed.generator.mix_true, mixed.generator.mix_corrupted, mixed.generator.mix_oof) == (0.5, 0.5, 0.0)
    assert record["train_inputs"]["used"] == "mix (true 0.5, corrupted 0.5, oof 0)"
    assert "draws its out-of-fold share from true features" in record["note"]
    given, record = adapt(load_config(imported, ["generator.train_inputs=corrupted"]), ExperimentStore(cfg_b))
    assert given.generator.train_inputs == "corrupted" and "train_inputs" not in record
    for path in store.roi_dir("sub-01", "VC").rglob("train_oof.h5"):  # a stage-1 store without them: unchanged
        path.unlink()
    assert adapt(cfg, store)[0] is cfg and adapt(cfg, store)[1] is None


def test_stage2_without_true_features_says_how_to_import_them(tmp_path, tiny_config):
    from stage2_generate.pipeline import run

    with pytest.raises(UserError, match="import-lab .*lab.import_kind=true_features"):
        run(load_config(tiny_config))
