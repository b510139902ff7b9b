import numpy as np
import pytest

from shared.store import FeatureStore, StoreMismatch

ATTRS = {"kind": "true", "network": "vgg19", "weights": "random:0", "layer": "conv1_1", "split": "train",
         "input_size": 32, "unit_shape": [2, 5, 10]}
EXPECT = {k: v for k, v in ATTRS.items() if k != "unit_shape"}


def _write(store, rng, names, n_units=100):
    data = rng.normal(size=(len(names), n_units)).astype(np.float32)
    path = store.true_path("vgg19", "random0", "conv1_1", "train")
    with store.writer(path, names, n_units, ATTRS) as w:
        for start in range(0, len(names), 3):  # row batches, as feature extraction writes
            w.write_rows(start, data[start:start + 3])
    return path, data


def test_round_trip_and_lazy_chunks(tmp_path, rng):
    store = FeatureStore(tmp_path)
    names = [f"img{i}" for i in range(7)]
    path, data = _write(store, rng, names)
    with store.open(path, EXPECT, names=names) as arr:
        assert arr.shape == (7, 100) and arr.unit_shape == (2, 5, 10)
        np.testing.assert_array_equal(arr.read(), data)
        np.testing.assert_array_equal(arr.read([5, 1, 3], slice(10, 20)), data[[5, 1, 3], 10:20])
        chunks = list(arr.iter_units(33))
        assert [c[0].start for c in chunks] == [0, 33, 66, 99]
        np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks], axis=1), data)
        np.testing.assert_array_equal(arr.rows_for(["img6", "img0"]), [6, 0])
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_mismatches_are_refused(tmp_path, rng):
    store = FeatureStore(tmp_path)
    names = ["a", "b", "c"]
    path, _ = _write(store, rng, names)
    with pytest.raises(StoreMismatch, match=r"holds network='vgg19' but network='alexnet' was asked"):
        store.open(path, {**EXPECT, "network": "alexnet"})
    with pytest.raises(StoreMismatch, match=r"holds layer='conv1_1' but layer='conv5_4'"):
        store.open(path, {**EXPECT, "layer": "conv5_4"})
    with pytest.raises(StoreMismatch, match=r"no row for stimulus 'zebra'"):
        store.open(path, EXPECT, names=["a", "zebra", "c"])
    with pytest.raises(StoreMismatch, match="another order"):
        store.open(path, EXPECT, names=["c", "b", "a"])
    with pytest.raises(StoreMismatch, match="stage 1 has not run on this config, run it first"):
        store.open(tmp_path / "missing.h5", EXPECT)
    # a wrong name below the store: the error lists what the nearest folder that exists holds
    with pytest.raises(StoreMismatch, match=r"conv1_1 holds train: check the subject, ROI, layer and split names"):
        store.open(store.true_path("vgg19", "random0", "conv1_1", "natural"), EXPECT)
    with pytest.raises(StoreMismatch, match=r"vgg19-random0 holds conv1_1: check"):
        store.open(store.true_path("vgg19", "random0", "fc7", "train"), EXPECT)


def test_interrupted_write_leaves_nothing(tmp_path, rng):
    store = FeatureStore(tmp_path)
    path = store.true_path("vgg19", "random0", "conv1_1", "train")
    with pytest.raises(RuntimeError):
        with store.writer(path, ["a", "b"], 10, ATTRS) as w:
            w.write_rows(0, np.ones((1, 10), dtype=np.float32))
            raise RuntimeError("killed")
    assert not path.exists()
    assert not list(tmp_path.rglob("*.tmp-*"))
