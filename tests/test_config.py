import pytest

from shared.config import load_config
from shared.errors import UserError


def test_defaults_and_yaml_and_overrides(tiny_config):
    cfg = load_config(tiny_config, ["generator.iterations=7", "data.rois=[VC, V1]", "decoder.alphas=[1, 2.5]"])
    assert cfg.experiment == "tiny"
    assert cfg.generator.iterations == 7
    assert cfg.data.rois == ["VC", "V1"]
    assert cfg.decoder.alphas == [1.0, 2.5]
    assert cfg.generator.lambda_gp == 10.0  # untouched default
    assert cfg.data.test["natural"].bdata.endswith("_perceptionNaturalImageTest_original_VC.h5")


def test_unknown_key_suggests_the_right_one(tiny_config):
    with pytest.raises(UserError, match=r"unknown config key 'generator.iteration'; did you mean 'generator.iterations'"):
        load_config(tiny_config, ["generator.iteration=5"])


def test_wrong_type_names_the_key(tiny_config):
    with pytest.raises(UserError, match=r"'generator.iterations' must be an integer"):
        load_config(tiny_config, ["generator.iterations=many"])
    with pytest.raises(UserError, match=r"'features.layers\[0\]' must be a string"):
        load_config(tiny_config, ["features.layers=[[1]]"])


def test_bad_values_are_refused(tiny_config):
    with pytest.raises(UserError, match=r"'features.network' must be one of \['vgg19', 'alexnet'\]; 'resnet' was given"):
        load_config(tiny_config, ["features.network=resnet"])
    with pytest.raises(UserError, match=r"'features.layers' entry 'conv9' is not a vgg19 layer"):
        load_config(tiny_config, ["features.layers=[conv9]"])
    with pytest.raises(UserError, match=r"'features.weights' must be 'imagenet'"):
        load_config(tiny_config, ["features.weights=pretrained"])
    with pytest.raises(UserError, match=r"condition_layers' entry 'fc6' is not decoded"):
        load_config(tiny_config, ["generator.condition_layers=[fc6]"])


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_partial_override_of_a_nested_section_keeps_its_defaults(tiny_config):
    cfg = load_config(tiny_config, ["data.train.images=stimuli/train", "data.test.natural.image_list=t.tsv"])
    assert cfg.data.train.images == "stimuli/train"
    assert cfg.data.train.bdata == "{subject}_perceptionNaturalImageTraining_original_VC.h5"
    assert cfg.data.test["natural"].image_list == "t.tsv"
    assert cfg.data.test["natural"].images == "images/test"
    with pytest.raises(UserError, match=r"'data.test.letter.bdata' is empty"):
        load_config(tiny_config, ["data.test.letter.images=x"])


@pytest.mark.parametrize("name", ["train", "train_oof", "validation", "info"])
def test_test_sets_may_not_take_a_name_the_tool_uses(tiny_config, name):
    from dataclasses import replace

    from shared.config import validate

    cfg = load_config(tiny_config)
    renamed = replace(cfg, data=replace(cfg.data, test={**cfg.data.test, name: cfg.data.test["natural"]}))
    with pytest.raises(UserError, match=f"must not name a test set '{name}'"):
        validate(renamed)


def test_the_shipped_presets_share_the_demos_generator_settings():
    """One set of generator settings (the demo's CPU budget, its learning rate chosen on validation) for the
    demo and both stress presets; only the image size follows the stimuli."""
    from dataclasses import asdict

    from conftest import ROOT

    settings = {}
    for name in ("demo", "small_strokes", "binary_shapes"):
        g = asdict(load_config(ROOT / "configs" / f"{name}.yaml").generator)
        g.pop("image_size")
        settings[name] = g
    assert settings["small_strokes"] == settings["demo"] == settings["binary_shapes"]
