"""Stage 1 in pieces: processes sharing a store (``--shard I/N``, ``torchrun`` ranks, a killed one rerun)
write the same arrays and the same decoding table as one process; a layer decoded in unit ranges reads
back as the one array."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CLI_ENV, ROOT, Finished, run_cli, write_tiny_config
from shared.store import FeatureArray, StoreMismatch, write_stitched

PARTS = ["decoder.part_units=5000"]  # conv3_4 at 32 px: 16,384 units in 4 parts of 5,000 (fc7: one item)


def _arrays(work: Path) -> dict[str, np.ndarray]:
    """Every decoded array of the store (what readers see), by path under ``decoded/``."""
    out = {}
    for path in sorted((work / "features" / "decoded").rglob("*.h5")):
        if ".part-" in path.name:
            continue
        with FeatureArray(path) as arr:
            out[str(path.relative_to(work / "features" / "decoded"))] = arr.read()
    return out


def _decoding_md(finished: Finished) -> str:
    return (finished.results / "decoding.md").read_text()


def _stage1(config: Path, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    return run_cli("stage1_decode", "run", "--config", str(config), *args, failpoint=failpoint)


def test_three_shards_in_any_order_one_killed_equal_one_process(tiny_finished: Finished, tmp_path):
    config = write_tiny_config(tmp_path, tiny_finished.data)
    sets = [f"--set={s}" for s in PARTS]
    logs = []
    # shards of 5 items (conv3_4's parts 1-4, fc7): 0/3 part 1; 1/3 parts 2 and 3; 2/3 part 4 and fc7
    r = _stage1(config, "--shard", "2/3", *sets)  # the last shard first
    assert r.returncode == 0, r.stderr[-3000:]
    logs.append(r.stderr)
    assert "work items are still to decode" in r.stderr and not (tmp_path / "results" / "tiny" / "decoding.md").exists()
    killed = _stage1(config, "--shard", "1/3", *sets, failpoint="decode.chunk:7")  # killed in its second item
    assert killed.returncode == -9
    assert "conv3_4 part 2/4 (units 5000-9999): decoded" in killed.stderr
    r = _stage1(config, "--shard", "0/3", *sets)
    assert r.returncode == 0, r.stderr[-3000:]
    logs.append(r.stderr)
    assert not (tmp_path / "results" / "tiny" / "decoding.md").exists()  # shard 1's second item is unfinished
    layer = next((tmp_path / "work").rglob("conv3_4/done.json"), None)
    assert layer is None  # its parts are not all there: not stitched
    r = _stage1(config, "--shard", "1/3", *sets)  # the rerun redoes the killed item and finishes
    assert r.returncode == 0, r.stderr[-3000:]
    logs.append(r.stderr)
    assert "conv3_4 part 2/4 (units 5000-9999): already decoded" in r.stderr
    assert re.search(r"deleted \d+ temporary file\(s\) an interrupted run left behind \(sub-01 VC conv3_4 part 3/4",
                     r.stderr)
    assert "4 parts stitched into one array per split" in r.stderr
    every = "\n".join([killed.stderr, *logs])
    for part in range(1, 5):  # each part decoded once, the killed one's redone by the rerun
        assert len(re.findall(rf"conv3_4 part {part}/4 \(units \d+-\d+\): decoded", every)) == 1, part
    ours, reference = _arrays(tmp_path / "work" / "tiny"), _arrays(tiny_finished.work)
    assert ours.keys() == reference.keys() and any("conv3_4" in k for k in ours)
    for key in reference:
        np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)
    assert (tmp_path / "results" / "tiny" / "decoding.md").read_text() == _decoding_md(tiny_finished)
    stitched = next((tmp_path / "work").rglob("conv3_4/natural.h5"))
    with FeatureArray(stitched) as arr:
        assert arr._data.is_virtual and arr.n_units == 16384
    # a part lost afterwards is named, not read as NaNs, and a rerun decodes it again
    next((tmp_path / "work").rglob("conv3_4/natural.part-2of4.h5")).unlink()
    with pytest.raises(StoreMismatch, match=r"part .*natural\.part-2of4\.h5 is missing; rerun stage 1"):
        FeatureArray(stitched)
    r = _stage1(config, *sets)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "conv3_4 part 2/4 (units 5000-9999): decoded" in r.stderr and "part 1/4 (units 0-4999): already" in r.stderr
    for key, value in _arrays(tmp_path / "work" / "tiny").items():
        np.testing.assert_array_equal(value, reference[key], err_msg=key)
    # and a layer whose last part's process stopped before stitching is stitched by the next run
    next((tmp_path / "work").rglob("conv3_4/done.json")).unlink()
    (tmp_path / "results" / "tiny" / "decoding.md").unlink()
    r = _stage1(config, *sets)  # every part there: only the stitching is left
    assert r.returncode == 0 and "4 parts stitched" in r.stderr and ": decoded" not in r.stderr, r.stderr[-3000:]
    for key, value in _arrays(tmp_path / "work" / "tiny").items():
        np.testing.assert_array_equal(value, reference[key], err_msg=key)
    assert (tmp_path / "results" / "tiny" / "decoding.md").read_text() == _decoding_md(tiny_finished)


HOLD_CLAIM = """
import sys
from pathlib import Path
from shared.locks import Claim
c = Claim(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.readline()  # until the test lets go
"""


def _claim_holder(claim: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(claim)], cwd=ROOT, env=CLI_ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_busy_item_is_left_or_with_wait_for_locks_waited_for(tiny_finished: Finished, tmp_path):
    """A process skips an item another holds (and leaves the scores to it); compare's stages
    (N2P_WAIT_FOR_LOCKS=1) wait for it, and finish it when its holder stopped without finishing."""
    from shared.config import load_config
    from shared.store import ExperimentStore
    from stage1_decode.items import Item, LayerFiles

    config = write_tiny_config(tmp_path, tiny_finished.data)
    claim = LayerFiles(ExperimentStore(load_config(config)), "sub-01", "VC", "fc7").claim(Item("sub-01", "VC", "fc7"))
    claim.parent.mkdir(parents=True)
    holder = _claim_holder(claim)
    try:
        r = _stage1(config)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sub-01 VC fc7: being decoded by another process; skipped" in r.stderr
    assert "1 of 2 work items are still to decode (first: sub-01 VC fc7), 1 of them being decoded by other" in r.stderr
    assert not (tmp_path / "results" / "tiny" / "decoding.md").exists()
    holder = _claim_holder(claim)
    stage1 = subprocess.Popen([sys.executable, "-m", "stage1_decode", "run", "--config", str(config)], cwd=ROOT,
                              env={**CLI_ENV, "N2P_WAIT_FOR_LOCKS": "1"}, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in stage1.stderr:  # the holder lets go only once stage 1 says it waits
            seen.append(line)
            if "waiting for 1 work item(s) other processes are decoding" in line:
                break
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0  # it ended on its own: waited for, not broken
        seen.append(stage1.stderr.read())
        assert stage1.wait(timeout=600) == 0, "".join(seen)[-3000:]
    finally:
        holder.kill()
        stage1.kill()
    assert any("waiting for 1 work item(s)" in line for line in seen)
    assert (tmp_path / "results" / "tiny" / "decoding.md").read_text() == _decoding_md(tiny_finished)


def test_torchrun_ranks_share_stage1_on_cpu(tiny_finished: Finished, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    config = write_tiny_config(tmp_path, tiny_finished.data)
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "stage1_decode", "run",
                        "--config", str(config), *[f"--set={s}" for s in PARTS]], cwd=ROOT, env=CLI_ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage 1 shard 0/2: 2 of 5 work items" in r.stderr and "stage 1 shard 1/2: 3 of 5 work items" in r.stderr
    ours, reference = _arrays(tmp_path / "work" / "tiny"), _arrays(tiny_finished.work)
    assert ours.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)
    assert (tmp_path / "results" / "tiny" / "decoding.md").read_text() == _decoding_md(tiny_finished)


def test_unit_ranges_stitch_into_the_unsplit_array(tmp_path, rng):
    from shared.store import ArrayWriter

    full = rng.normal(size=(7, 23)).astype(np.float32)
    names = [f"im{i}" for i in range(7)]
    attrs = {"kind": "decoded", "network": "vgg19", "weights": "random:0", "layer": "fc7", "split": "natural",
             "unit_shape": [23]}
    parts = []
    for k, units in enumerate([slice(0, 10), slice(10, 20), slice(20, 23)]):
        path = tmp_path / f"natural.part-{k + 1}of3.h5"
        with ArrayWriter(path, names, units.stop - units.start, attrs) as w:
            w.write_units(slice(0, units.stop - units.start), full[:, units])
        parts.append((path, units))
    write_stitched(tmp_path / "natural.h5", parts)
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.move(str(tmp_path), moved)  # parts are named relative to the stitched file
    with FeatureArray(moved / "natural.h5") as arr:
        np.testing.assert_array_equal(arr.read(), full)
        np.testing.assert_array_equal(arr.read(np.array([5, 1]), slice(8, 13)), full[[5, 1], 8:13])
        assert list(arr.names) == names and arr.attrs["layer"] == "fc7"
        assert [blk.shape[1] for _, blk in arr.iter_units(9, slice(9, 23))] == [9, 5]


def test_bad_shard_is_one_line(tiny_config):
    r = run_cli("stage1_decode", "run", "--config", str(tiny_config), "--shard", "3/3")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: --shard must be I/N with 0 <= I < N")
