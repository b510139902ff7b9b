"""The lab's per-image .mat feature files <-> the feature store: files written as the lab
writes them (bdpy ``save_array``, scipy) import exactly, and bdpy's own readers
(``Features``, ``DecodedFeatures``) read back exactly what the export wrote."""

import json
import re

import numpy as np
import pytest
import scipy.io
from bdpy.dataform import DecodedFeatures, Features, save_array

from shared.config import load_config
from shared.errors import UserError
from shared.store import ExperimentStore
from stage1_decode.labfiles import export_lab, export_lab_verb, import_lab, import_lab_verb

SHAPES = {"conv3_4": (4, 3, 5), "fc7": (6,)}  # small stand-ins for (C, H, W) and (n,) layers
NAMES = {"train": ["n02_b", "n01_a", "n03_c", "n05_e", "n04_d"],  # image-list order, not sorted
         "natural": ["t3", "t1", "t2"]}
ARTIFICIAL = {"bdata": "art_{subject}.h5", "image_list": "image_list_artificial.tsv", "images": "images/art"}


def _config(tiny_config, tmp_path, *overrides, names=NAMES):
    """The tiny config (two layers, one subject and ROI) with image lists written, and a
    lab folder in tmp_path."""
    cfg = load_config(tiny_config, [f"lab.root={tmp_path / 'lab'}", *overrides])
    for split, split_names in names.items():
        spec = cfg.data.train if split == "train" else cfg.data.test[split]
        path = cfg.data_root / spec.image_list
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{n}\t{i + 1}\n" for i, n in enumerate(split_names)))
    return cfg


def _write(store, path, names, data, attrs):
    with store.writer(path, names, data.shape[1], attrs) as w:
        w.write_rows(0, data)


def _fill_store(cfg, rng, names=NAMES, oof=True):
    """Known true arrays of every split, decoded arrays of every test split (and train_oof)
    for sub-01/VC; returns ``{(kind, layer, split): (n_images, n_units) float32}``."""
    store = ExperimentStore(cfg)
    known = {}
    for layer, shape in SHAPES.items():
        n_units = int(np.prod(shape))
        for split, split_names in names.items():
            data = rng.normal(size=(len(split_names), n_units)).astype(np.float32)
            _write(store, store.true_file(layer, split), split_names, data,
                   {**store.true_expect(layer, split), "unit_shape": list(shape)})
            known["true", layer, split] = data
        decoded_splits = [s for s in names if s != "train"] + (["train_oof"] if oof else [])
        for split in decoded_splits:
            split_names = names["train" if split == "train_oof" else split]
            data = rng.normal(size=(len(split_names), n_units)).astype(np.float32)
            _write(store, store.decoded_file("sub-01", "VC", layer, split), split_names, data,
                   {**store.decoded_expect("sub-01", "VC", layer, split), "unit_shape": list(shape)})
            known["decoded", layer, split] = data
    return known


def test_import_reads_lab_files_in_image_list_order(tiny_config, tmp_path, rng):
    cfg = _config(tiny_config, tmp_path)
    root = tmp_path / "lab"
    true, decoded = {}, {}
    for name in [*NAMES["train"], *NAMES["natural"], "n99_not_in_any_list"]:
        # conv files as the lab's code writes them (MATLAB v7.3 via bdpy), fc files as
        # scipy writes them (MAT v5, float64): both must import
        true["conv3_4", name] = rng.normal(size=(1, 4, 3, 5)).astype(np.float32)
        (root / "vgg19" / "conv3_4").mkdir(parents=True, exist_ok=True)
        save_array(str(root / "vgg19" / "conv3_4" / f"{name}.mat"), true["conv3_4", name], key="feat",
                   dtype=np.float32)
        true["fc7", name] = rng.normal(size=(1, 6))
        (root / "vgg19" / "fc7").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "vgg19" / "fc7" / f"{name}.mat", {"feat": true["fc7", name]})
    for layer, shape in SHAPES.items():
        folder = root / "vgg19" / layer / "sub-01" / "VC"
        folder.mkdir(parents=True)
        for name in NAMES["natural"]:
            decoded[layer, name] = rng.normal(size=(1, *shape)).astype(np.float32)
            save_array(str(folder / f"{name}.mat"), decoded[layer, name], key="feat", dtype=np.float32)

    written = import_lab(cfg, root, "true")
    assert len(written) == 4
    store = ExperimentStore(cfg)
    for layer, shape in SHAPES.items():
        for split, names in NAMES.items():
            with store.open_true(layer, split, names=names) as arr:
                assert arr.unit_shape == shape
                expected = np.concatenate([true[layer, n].reshape(1, -1) for n in names]).astype(np.float32)
                np.testing.assert_array_equal(arr.read(), expected)
                assert json.loads(arr.attrs["provenance"]) == {"imported_from": str(root)}
                assert "imported from lab files" in arr.attrs["weights_label"]

    import_lab(cfg, root, "decoded")
    for layer, shape in SHAPES.items():
        with store.open_decoded("sub-01", "VC", layer, "natural") as arr:
            assert list(arr.names) == NAMES["natural"] and arr.unit_shape == shape
            expected = np.concatenate([decoded[layer, n].reshape(1, -1) for n in NAMES["natural"]])
            np.testing.assert_array_equal(arr.read(), expected)
            assert arr.read().dtype == np.float32


def test_export_is_read_back_by_bdpy(tiny_config, tmp_path, rng):
    cfg = _config(tiny_config, tmp_path)
    known = _fill_store(cfg, rng)
    root = tmp_path / "lab"
    assert export_lab(cfg, root) == 2 * (5 + 3) + 2 * (3 + 5)  # true train+natural; decoded natural+train_oof
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temporary files left

    features = Features(str(root / "vgg19"))
    assert features.layers == ["conv3_4", "fc7"]
    assert sorted(features.labels) == sorted(NAMES["train"] + NAMES["natural"])
    decoded = DecodedFeatures(str(root / "vgg19"))
    for layer, shape in SHAPES.items():
        for split, names in NAMES.items():
            for i, name in enumerate(names):
                feat = features.get(layer, label=name)
                assert feat.shape == (1, *shape) and feat.dtype == np.float32
                np.testing.assert_array_equal(feat, known["true", layer, split][i].reshape(1, *shape))
        whole = features.get_features(layer)  # all labels at once, in bdpy's (sorted) label order
        rows = {n: known["true", layer, s][i] for s, names in NAMES.items() for i, n in enumerate(names)}
        np.testing.assert_array_equal(whole.reshape(len(whole), -1), np.stack([rows[n] for n in features.labels]))
        for split, names in (("natural", NAMES["natural"]), ("train_oof", NAMES["train"])):
            for i, name in enumerate(names):
                feat = decoded.get(layer=layer, subject="sub-01", roi="VC", label=name)
                assert feat.shape == (1, *shape) and feat.dtype == np.float32
                np.testing.assert_array_equal(feat, known["decoded", layer, split][i].reshape(1, *shape))


def test_round_trip_store_to_lab_to_store_is_exact(tiny_config, tmp_path, rng):
    cfg_a = _config(tiny_config, tmp_path)
    known = _fill_store(cfg_a, rng, oof=False)
    root = tmp_path / "lab"
    export_lab(cfg_a, root)
    cfg_b = _config(tiny_config, tmp_path, f"work_dir={tmp_path / 'work_b'}")
    import_lab(cfg_b, root, "true")
    import_lab(cfg_b, root, "decoded")
    a, b = ExperimentStore(cfg_a), ExperimentStore(cfg_b)
    assert a.root != b.root
    for layer, shape in SHAPES.items():
        for split, names in NAMES.items():
            with a.open_true(layer, split) as x, b.open_true(layer, split, names=names) as y:
                assert y.unit_shape == x.unit_shape == shape and list(y.names) == list(x.names)
                np.testing.assert_array_equal(y.read(), x.read())
                np.testing.assert_array_equal(y.read(), known["true", layer, split])
        with a.open_decoded("sub-01", "VC", layer, "natural") as x, \
                b.open_decoded("sub-01", "VC", layer, "natural") as y:
            assert y.unit_shape == x.unit_shape and list(y.names) == list(x.names) == NAMES["natural"]
            np.testing.assert_array_equal(y.read(), x.read())


def test_missing_folder_or_file_is_one_line_naming_it(tiny_config, tmp_path, rng):
    cfg = _config(tiny_config, tmp_path)
    root = tmp_path / "lab"
    with pytest.raises(UserError, match=re.escape(f"lab feature folder {root / 'vgg19' / 'conv3_4'} not found")):
        import_lab(cfg, root, "true")
    _fill_store(cfg, rng, oof=False)
    export_lab(cfg, root)
    missing = root / "vgg19" / "fc7" / "sub-01" / "VC" / "t1.mat"
    missing.unlink()
    store = ExperimentStore(cfg)
    store.decoded_file("sub-01", "VC", "conv3_4", "natural").unlink()
    with pytest.raises(UserError, match=re.escape(f"lab feature file {missing} not found")) as exc:
        import_lab(cfg, root, "decoded")
    assert "\n" not in str(exc.value) and "'t1'" in str(exc.value)
    # checked before any work: nothing was written
    assert not store.decoded_file("sub-01", "VC", "conv3_4", "natural").exists()


def test_shape_mismatches_are_refused(tiny_config, tmp_path, rng):
    cfg = _config(tiny_config, tmp_path, "features.layers=[conv3_4]", "generator.condition_layers=[conv3_4]")
    store = ExperimentStore(cfg)
    root = tmp_path / "lab"
    folder = root / "vgg19" / "conv3_4" / "sub-01" / "VC"
    folder.mkdir(parents=True)
    for name in NAMES["natural"]:  # another input size than the store's (4, 3, 5)
        save_array(str(folder / f"{name}.mat"), np.ones((1, 4, 6, 10)), key="feat", dtype=np.float32)
    save_array(str(folder / "t1.mat"), np.ones((1, 4, 3, 5)), key="feat", dtype=np.float32)
    with pytest.raises(UserError, match=r"every image of a layer must have the same shape") as exc:
        import_lab(cfg, root, "decoded")
    assert str(folder / "t1.mat") in str(exc.value)
    assert not store.decoded_file("sub-01", "VC", "conv3_4", "natural").exists()  # the writer aborted
    save_array(str(folder / "t1.mat"), np.ones((1, 4, 6, 10)), key="feat", dtype=np.float32)
    _write(store, store.true_file("conv3_4", "train"), NAMES["train"], np.zeros((5, 60), np.float32),
           {**store.true_expect("conv3_4", "train"), "unit_shape": [4, 3, 5]})
    with pytest.raises(UserError, match=r"shape \(4, 6, 10\) but the feature store's conv3_4 array .* has \(4, 3, 5\)"):
        import_lab(cfg, root, "decoded")
    for name in NAMES["natural"]:  # the right shape, but one file lacks the image axis
        save_array(str(folder / f"{name}.mat"), np.ones((1, 4, 3, 5)), key="feat", dtype=np.float32)
    save_array(str(folder / "t1.mat"), np.ones((4, 3, 5)), key="feat", dtype=np.float32)
    with pytest.raises(UserError, match=r"t1.mat holds 'feat' of shape \(4, 3, 5\); .* one image per file"):
        import_lab(cfg, root, "decoded")


def test_export_refuses_a_stimulus_name_in_two_splits(tiny_config, tmp_path, rng):
    names = {**NAMES, "artificial": ["a1", "t1"]}
    cfg = _config(tiny_config, tmp_path, f"data.test.artificial={json.dumps(ARTIFICIAL)}", names=names)
    _fill_store(cfg, rng, names=names, oof=False)
    with pytest.raises(UserError, match=r"stimulus 't1' is in split 'natural' and in split 'artificial'"):
        export_lab(cfg, tmp_path / "lab")
    # each split alone is fine
    assert export_lab(cfg, tmp_path / "lab", splits=["artificial"]) == 2 * 2 + 2 * 2


def test_verbs_take_the_lab_config(tiny_config, tmp_path, rng):
    cfg = _config(tiny_config, tmp_path)
    _fill_store(cfg, rng, oof=False)
    cfg.lab.root = ""
    with pytest.raises(UserError, match=r"'lab.root' is empty"):
        export_lab_verb(cfg)
    cfg.lab.root = str(tmp_path / "lab")
    export_lab_verb(cfg)
    assert (tmp_path / "lab" / "vgg19" / "fc7" / "sub-01" / "VC" / "t2.mat").is_file()
    cfg_b = _config(tiny_config, tmp_path, f"work_dir={tmp_path / 'work_b'}")
    cfg_b.lab.import_kind = "true"  # would arrive as a YAML boolean from --set; the config value is true_features
    with pytest.raises(UserError, match=r"'lab.import_kind' must be one of \['true_features', 'decoded'\]; 'true'"):
        import_lab_verb(cfg_b)
    cfg_b.lab.root = str(tmp_path / "elsewhere")
    cfg_b.lab.import_kind = "true_features"
    with pytest.raises(UserError, match=re.escape(f"lab feature folder {tmp_path / 'elsewhere' / 'vgg19'} not found")):
        import_lab_verb(cfg_b)
    cfg_b.lab.root = str(tmp_path / "lab")
    import_lab_verb(cfg_b)
    assert ExperimentStore(cfg_b).true_file("fc7", "natural").is_file()
    runs = sorted(p.name for p in (cfg.results_path / "runs").iterdir())
    assert runs == ["export-lab-001", "import-lab-001"]
