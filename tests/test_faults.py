"""Kills and failed writes: SIGKILL (``N2P_FAILPOINT``, see shared/faults.py) in the middle of stage 1's
decoding, of stage 2's training, of a checkpoint write and of a comparison; a damaged checkpoint;
a full disk. Each rerun finishes with the ``metrics.json`` of the uninterrupted run (run records aside)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import Finished, comparable, run_cli, write_tiny_config


KILLED = -9  # subprocess returncode of a SIGKILLed process


def _temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp-*") if p.is_file()]


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "results" / "tiny" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def stage1_resumed(tiny_finished: Finished, tmp_path_factory) -> dict:
    """Stage 1 of the tiny experiment SIGKILLed in the middle of its first layer, then rerun."""
    folder = tmp_path_factory.mktemp("stage1_killed")
    config = write_tiny_config(folder, tiny_finished.data)
    killed = run_cli("stage1_decode", "run", "--config", str(config), failpoint="decode.chunk:3")
    left = _temporary_files(folder / "work")
    rerun = run_cli("stage1_decode", "run", "--config", str(config))
    return {"folder": folder, "config": config, "killed": killed, "left": left, "rerun": rerun}


def _copy(stage1: dict, tmp_path: Path) -> Path:
    """A copy of the resumed stage 1's work and results, with its own config."""
    for name in ("work", "results"):
        shutil.copytree(stage1["folder"] / name, tmp_path / name)
    return write_tiny_config(tmp_path, Path(yaml.safe_load(stage1["config"].read_text())["data"]["root"]))


def test_stage1_killed_in_the_middle_of_a_layer_resumes_to_the_same_decoding(stage1_resumed, tiny_finished):
    killed, rerun = stage1_resumed["killed"], stage1_resumed["rerun"]
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    assert "decode sub-01/VC/conv3_4" in killed.stderr and "stage 1 done" not in killed.stderr
    assert any(p.name.startswith(".natural.h5.tmp-") for p in stage1_resumed["left"])  # the layer half written
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "temporary file(s) an interrupted run left behind" in rerun.stderr
    assert not _temporary_files(stage1_resumed["folder"])
    got, want = _metrics(stage1_resumed["folder"]), tiny_finished.metrics
    stage2 = ("reconstruction", "result_key", "result_settings")  # what only stage 2 writes
    assert {k: v for k, v in comparable(got).items() if not k.startswith(stage2)} == \
        {k: v for k, v in comparable(want).items() if not k.startswith(stage2)}


def test_stage2_killed_in_the_middle_of_training_resumes_to_the_same_metrics(stage1_resumed, tiny_finished, tmp_path):
    config = _copy(stage1_resumed, tmp_path)
    killed = run_cli("stage2_generate", "run", "--config", str(config), failpoint="train.step:3")
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    rerun = run_cli("stage2_generate", "run", "--config", str(config))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming generator training at step 2" in rerun.stderr
    assert comparable(_metrics(tmp_path)) == comparable(tiny_finished.metrics)


def test_kill_while_writing_a_checkpoint_and_a_damaged_checkpoint(stage1_resumed, tiny_finished, tmp_path):
    """Killed halfway through writing the trained generator (its checkpoints of steps 2 and 4 on disk);
    then the step-4 checkpoint is damaged: the rerun warns, resumes from step 2 and ends the same."""
    config = _copy(stage1_resumed, tmp_path)
    killed = run_cli("stage2_generate", "run", "--config", str(config), failpoint="checkpoint.write:3")
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    (ckpt_dir,) = (tmp_path / "work" / "tiny" / "generator").iterdir()
    assert [p.name for p in _temporary_files(ckpt_dir)] != [] and not (ckpt_dir / "generator.pt").exists()
    ckpt = ckpt_dir / "checkpoint.pt"
    assert (ckpt_dir / "checkpoint.pt.prev").is_file()
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    ckpt.write_bytes(bytes(data))
    rerun = run_cli("stage2_generate", "run", "--config", str(config))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "WARNING" in rerun.stderr and "checkpoint.pt is damaged" in rerun.stderr
    assert "resuming generator training at step 2 from" in rerun.stderr and "checkpoint.pt.prev" in rerun.stderr
    assert not _temporary_files(tmp_path)
    assert comparable(_metrics(tmp_path)) == comparable(tiny_finished.metrics)


def test_a_full_disk_leaves_the_previous_file_and_says_so(stage1_resumed, tmp_path):
    config = _copy(stage1_resumed, tmp_path)
    metrics = tmp_path / "results" / "tiny" / "metrics.json"
    before = metrics.read_bytes()
    r = run_cli("stage1_decode", "run", "--config", str(config), failpoint="write.metrics.json:1:enospc")
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device while writing") and "Traceback" not in r.stderr
    assert "(the previous metrics.json is intact)" in last
    assert metrics.read_bytes() == before and not _temporary_files(tmp_path)


def test_compare_killed_between_variants_resumes_and_reuses_the_first(tiny_finished, tmp_path):
    config = write_tiny_config(tmp_path, tiny_finished.data)
    spec = tmp_path / "two.yaml"
    spec.write_text(yaml.safe_dump({"name": "two", "base": str(config), "reference": "base",
                                    "variants": {"base": {}, "no pixel loss": {"generator.loss_pixel": 0}}}))
    killed = run_cli("stage2_generate", "compare", "--config", str(spec), failpoint="compare.variant:1")
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    assert "variant 2/2" not in killed.stderr
    rerun = run_cli("stage2_generate", "compare", "--config", str(spec))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "variant 1/2 'base': reused" in rerun.stderr and "variant 2/2 'no pixel loss': stage 1 reused" in rerun.stderr
    table = (tmp_path / "results" / "compare" / "two" / "table.md").read_text()
    assert "| base |" in table and "| no pixel loss |" in table
    record = json.loads((tmp_path / "results" / "compare" / "two" / "compare.json").read_text())["variants"][0]
    variant = json.loads((Path(record["results"]) / "metrics.json").read_text())
    assert comparable(variant) == comparable(tiny_finished.metrics)  # the same as the plain run of its config


# ---------------------------------------------------------------------- checkpoint files in-process

def test_checkpoint_damage_is_detected_and_the_previous_generation_read(tmp_path, caplog):
    from shared import checkpoints

    path = tmp_path / "checkpoint.pt"
    checkpoints.save({"step": 2}, path)
    checkpoints.save({"step": 4}, path)
    assert checkpoints.load(path)["step"] == 4 and checkpoints.load(checkpoints.previous(path))["step"] == 2
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(checkpoints.CorruptCheckpoint, match="is damaged"):
        checkpoints.load(path)
    state, used = checkpoints.load_latest(path)
    assert state["step"] == 2 and used == checkpoints.previous(path)
    assert "resuming from the last good checkpoint" in caplog.text


def test_a_full_disk_while_saving_a_checkpoint_keeps_both_generations(tmp_path, monkeypatch):
    from shared import checkpoints
    from shared.errors import DiskFull

    path = tmp_path / "checkpoint.pt"
    checkpoints.save({"step": 2}, path)
    checkpoints.save({"step": 4}, path)
    monkeypatch.setenv("N2P_FAILPOINT", "checkpoint.write:1:enospc")
    with pytest.raises(DiskFull, match="the previous checkpoint.pt is intact"):
        checkpoints.save({"step": 6}, path)
    assert checkpoints.load(path)["step"] == 4 and checkpoints.load(checkpoints.previous(path))["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.prev"]
