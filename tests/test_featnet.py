from pathlib import Path

import pytest
import torch

from shared.errors import UserError
from shared.featnet import FeatureNet, build_model, imagenet_weights_path


def test_vgg19_canonical_layers_and_shapes():
    net = FeatureNet("vgg19", "random:0", ["fc7", "conv1_1", "conv5_4"], input_size=64)
    assert net.layers == ["conv1_1", "conv5_4", "fc7"]  # forward order
    shapes = net.unit_shapes()
    assert shapes == {"conv1_1": (64, 64, 64), "conv5_4": (512, 4, 4), "fc7": (4096,)}


def test_alexnet_layers_are_the_convolutions_not_bdpys_map():
    net = FeatureNet("alexnet", "random:0", ["conv2", "conv5", "fc6"], input_size=64)
    x = torch.rand(2, 3, 64, 64)
    out = net(x)
    # conv outputs are pre-ReLU: they have negative values (a ReLU or MaxPool output would not)
    assert (out["conv2"] < 0).any() and (out["conv5"] < 0).any() and (out["fc6"] < 0).any()
    assert out["conv2"].shape[1] == 192 and out["conv5"].shape[1] == 256


def test_random_weights_are_seeded():
    a = build_model("alexnet", "random:3").features[0].weight
    b = build_model("alexnet", "random:3").features[0].weight
    c = build_model("alexnet", "random:4").features[0].weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_missing_imagenet_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, url = imagenet_weights_path("vgg19")
    assert str(path).startswith(str(tmp_path))
    with pytest.raises(UserError, match=f"not found at {path}; download {url}"):
        build_model("vgg19", "imagenet")


def test_weights_from_a_file(tmp_path):
    model = build_model("alexnet", "random:5")
    path = tmp_path / "alex.pth"
    torch.save(model.state_dict(), path)
    loaded = build_model("alexnet", str(path))
    assert torch.equal(loaded.features[0].weight, model.features[0].weight)
    torch.save({"nonsense": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="is not a alexnet state dict"):
        build_model("alexnet", str(tmp_path / "bad.pth"))


def test_random_weights_are_drawn_once_then_read_back_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("N2P_WEIGHTS_CACHE", str(tmp_path))
    drawn = build_model("alexnet", "random:7").state_dict()
    [cached] = tmp_path.glob("alexnet-random7-*.pt")
    read = build_model("alexnet", "random:7").state_dict()
    monkeypatch.setenv("N2P_WEIGHTS_CACHE", "off")
    fresh = build_model("alexnet", "random:7").state_dict()
    assert list(tmp_path.iterdir()) == [cached]  # "off" writes nothing
    for name, t in fresh.items():
        assert torch.equal(drawn[name], t) and torch.equal(read[name], t), name
    # the second build read the file: a changed file gives changed weights
    monkeypatch.setenv("N2P_WEIGHTS_CACHE", str(tmp_path))
    state = torch.load(cached, weights_only=True)
    state["features.0.bias"] += 1
    torch.save(state, cached)
    assert torch.equal(build_model("alexnet", "random:7").features[0].bias, fresh["features.0.bias"] + 1)
    # a damaged file is drawn again and replaced
    cached.write_bytes(b"not a state dict")
    assert torch.equal(build_model("alexnet", "random:7").features[0].weight, fresh["features.0.weight"])
    assert torch.equal(torch.load(cached, weights_only=True)["features.0.weight"], fresh["features.0.weight"])


def test_a_cache_that_cannot_be_written_is_skipped_and_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("N2P_WEIGHTS_CACHE", str(tmp_path))

    def full_disk(state, path):  # what torch raises when the disk fills mid-write
        Path(path).write_bytes(b"partial")
        raise RuntimeError("unexpected pos")

    monkeypatch.setattr(torch, "save", full_disk)
    model = build_model("alexnet", "random:8")
    assert list(tmp_path.iterdir()) == [] and model.features[0].weight.dtype == torch.float32


def test_a_half_precision_weights_file_gives_a_float32_network(tmp_path):
    model = build_model("alexnet", "random:5")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "half.pth")
    net = FeatureNet("alexnet", str(tmp_path / "half.pth"), ["conv2"], input_size=64)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert net(torch.rand(1, 3, 64, 64))["conv2"].dtype == torch.float32
