"""Checkpoints, generator files and network weights are read as tensors and plain data only: a file
that would need general unpickling (which can run any code on load) is refused in one line naming it."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch

from conftest import run_cli, write_tiny_config
from shared import checkpoints
from shared.errors import UserError


def _state() -> dict:
    """What a training checkpoint holds: state dicts, an optimiser's state, a generator's RNG, records."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(0)
    return {"key": "abc", "step": 4, "generator": model.state_dict(), "opt_g": opt.state_dict(),
            "rng": gen.get_state(), "rollbacks": [{"step": 2, "event": "rollback", "lr": 1e-4}],
            "input_shapes": [(3,), (8, 4, 4)], "best_score": None, "lr_scale": 0.3}


def test_a_training_checkpoint_round_trips_as_plain_data(tmp_path):
    state = _state()
    checkpoints.save(state, tmp_path / "checkpoint.pt")
    back = checkpoints.load(tmp_path / "checkpoint.pt")
    assert back["rollbacks"] == state["rollbacks"] and back["input_shapes"] == state["input_shapes"]
    assert torch.equal(back["rng"], state["rng"]) and torch.equal(back["generator"]["weight"],
                                                                   state["generator"]["weight"])


@pytest.mark.parametrize("checksummed", [True, False])
def test_a_file_needing_unpickling_is_refused_naming_it(tmp_path, checksummed):
    path = tmp_path / "checkpoint.pt"
    evil = {**_state(), "extra": argparse.Namespace(payload=1)}  # a class to import and call on load
    if checksummed:
        checkpoints.save(evil, path)
    else:
        torch.save(evil, path)
    with pytest.raises(checkpoints.UnsafeCheckpoint, match=rf"^{path} holds objects beyond tensors"):
        checkpoints.load(path)
    # never passed over for an older, loadable generation: the user is told
    checkpoints.save(_state(), checkpoints.previous(path))
    with pytest.raises(checkpoints.UnsafeCheckpoint):
        checkpoints.load_latest(path)


def test_garbage_is_damage_not_danger(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage" * 10)
    with pytest.raises(checkpoints.CorruptCheckpoint, match="cannot be read"):
        checkpoints.load(tmp_path / "checkpoint.pt")


def test_network_weights_needing_unpickling_are_refused(tmp_path):
    from shared.featnet import build_model

    path = tmp_path / "alexnet.pth"
    torch.save({**build_model("alexnet", "random:0").state_dict(), "meta": argparse.Namespace(a=1)}, path)
    with pytest.raises(UserError, match=rf"weights file {path} holds objects beyond tensors"):
        build_model("alexnet", str(path))


def test_stage2_refuses_an_unsafe_generator_file_in_one_line(tiny_finished, tmp_path):
    shutil.copytree(tiny_finished.folder / "work", tmp_path / "work")
    config = write_tiny_config(tmp_path, tiny_finished.data)
    before = set((tmp_path / "work").glob("tiny/generator/*/generator.pt"))
    assert run_cli("stage2_generate", "run", "--config", str(config)).returncode == 0  # its generator, here
    final = (set((tmp_path / "work").glob("tiny/generator/*/generator.pt")) - before).pop()
    torch.save({"key": "x", "generator": argparse.Namespace(a=1)}, final)
    r = run_cli("stage2_generate", "run", "--config", str(config))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {final} holds objects beyond tensors") and "Traceback" not in r.stderr
