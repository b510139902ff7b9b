"""``compare --jobs``: the order the stages of several variants run in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stage2_generate.compare.spec import load_compare


def _files(tmp_path: Path, tiny_config: Path, variants: dict) -> Path:
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "base": tiny_config.name, "variants": variants}, sort_keys=False))
    return path


def test_jobs_run_every_stage_1_still_to_run_before_any_stage_2(tmp_path, tiny_config, monkeypatch):
    """A stage 1 cannot write a store while a stage 2 reads it: queued behind a training it would idle its worker
    for the whole training. With --jobs 2 the two stage-1 configurations (base, V1) run first, side by side; each
    stage runs once; a variant sharing a stage 1 reuses it."""
    import threading
    import time as time_

    from stage2_generate.compare import runner

    events, lock = [], threading.Lock()

    def stage(module, config_path, what, prefix=b"", threads=0, stop=None):
        with lock:
            events.append(("start", module, what))
        time_.sleep(0.3)
        with lock:
            events.append(("end", module, what))

    monkeypatch.setattr(runner, "_run_stage", stage)
    spec = load_compare(_files(tmp_path, tiny_config, {"base": {}, "fc only": {"generator.condition_layers": ["fc7"]},
                                                       "V1": {"data.rois": ["V1"]}}))
    records = runner.run_variants(spec.variants, jobs=2)
    stage1 = [e for e in events if e[1] == "stage1_decode"]
    last_stage1_end = max(k for k, e in enumerate(events) if e[1] == "stage1_decode")
    first_stage2_start = min(k for k, e in enumerate(events) if e[1] == "stage2_generate")
    assert last_stage1_end < first_stage2_start
    assert [e[0] for e in stage1] == ["start", "start", "end", "end"]  # side by side
    assert sorted(e[2] for e in stage1 if e[0] == "start") == ["variant 'V1', stage 1", "variant 'base', stage 1"]
    assert sum(e[1] == "stage2_generate" and e[0] == "start" for e in events) == 3
    assert [(r["name"], r["reused"]) for r in records] == [("base", "nothing"), ("fc only", "stage 1"),
                                                            ("V1", "nothing")]  # in the compare file's order
    # a rerun: everything cached, nothing runs
    events.clear()
    assert {r["reused"] for r in runner.run_variants(spec.variants, jobs=2)} == {"both stages"} and not events


def _recording(monkeypatch, fail: str | None = None):
    import threading
    import time as time_

    from shared.errors import UserError
    from stage2_generate.compare import runner

    events, lock = [], threading.Lock()

    def stage(module, config_path, what, prefix=b"", threads=0, stop=None):
        if stop is not None:  # as the real one: no stage starts once a failure has stopped the comparison
            stop.check()
        with lock:
            events.append(("start", module, what))
        if what == fail:  # at once, while the other stage 1 runs
            raise UserError(f"{what} failed (a test's stand-in)")
        time_.sleep(0.3)
        with lock:
            events.append(("end", module, what))

    monkeypatch.setattr(runner, "_run_stage", stage)
    return runner, events


def test_a_variant_whose_store_has_no_stage_1_pending_trains_beside_a_stage_1(tmp_path, tiny_config, monkeypatch):
    runner, events = _recording(monkeypatch)
    first = load_compare(_files(tmp_path, tiny_config, {"base": {}}))
    runner.run_variants(first.variants, jobs=2)  # base's stage 1 and stage 2 cached
    events.clear()
    spec = load_compare(_files(tmp_path, tiny_config, {"base": {}, "more alphas": {"decoder.alphas": [1.0, 1e3]},
                                                       "fc only": {"generator.condition_layers": ["fc7"]}}))
    records = runner.run_variants(spec.variants, jobs=2)
    start = {e[2]: k for k, e in enumerate(events) if e[0] == "start"}
    end = {e[2]: k for k, e in enumerate(events) if e[0] == "end"}
    # fc only shares base's cached stage 1 in another store than more alphas' new one: it trains meanwhile
    assert start["variant 'fc only', stage 2"] < end["variant 'more alphas', stage 1"]
    assert [r["reused"] for r in records] == ["both stages", "nothing", "stage 1"]


def test_a_stage_1_that_fails_starts_no_stage_2(tmp_path, tiny_config, monkeypatch):
    from shared.errors import UserError

    runner, events = _recording(monkeypatch, fail="variant 'V1', stage 1")
    spec = load_compare(_files(tmp_path, tiny_config, {"base": {}, "V1": {"data.rois": ["V1"]}}))
    with pytest.raises(UserError, match="variant 'V1', stage 1 failed"):
        runner.run_variants(spec.variants, jobs=2)
    assert not [e for e in events if e[1] == "stage2_generate"]
