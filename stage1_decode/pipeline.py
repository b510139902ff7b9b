"""Stage 1 verbs: ``simulate`` and ``run`` (features -> decoders -> decoded features -> scores)."""

from __future__ import annotations

import json
import logging
import os
import time


from shared.config import Config
from shared.datasets import DataSource, bdata_files, check_inputs, load_split, split_image_names
from shared.errors import UserError
from shared.plotting import decoding_plot
from shared.report import (DECODING_COLUMNS, RESULT_VERSION, decoding_rows, named_test_images, section_key,
                           write_summary, write_table)
from shared.runs import Run, atomic_write_json, update_metrics
from shared.store import ExperimentStore
from shared.weights import parse_weights
from stage1_decode.features import compute_true_features

log = logging.getLogger(__name__)


def ensure_data(cfg: Config) -> None:
    """Write the simulated experiment if the config asks for one (a no-op when present)."""
    if cfg.data.source == "simulated":
        from shared.simulate.experiment import simulate_experiment

        simulate_experiment(cfg)


def simulate(cfg: Config) -> None:
    if cfg.data.source != "simulated":
        raise UserError(f"'data.source' is {cfg.data.source!r}; set data.source=simulated to write a simulated experiment")
    ensure_data(cfg)
    log.info("simulated experiment ready in %s", cfg.data_root)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` (0 <= I < N); None stays None."""
    if text is None:
        return None
    i, _, n = text.partition("/")
    if not (i.strip().isdigit() and n.strip().isdigit()) or not 0 <= int(i) < int(n):
        raise UserError(f"--shard must be I/N with 0 <= I < N, counting from 0 (e.g. --shard 0/4; in a SLURM array "
                        f"--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-3); {text!r} was given")
    return int(i), int(n)


def this_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    """The shard this process takes: ``--shard``'s, and under ``torchrun`` each rank one share of it."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return shard
    rank = int(os.environ.get("RANK", "0"))
    i, n = shard or (0, 1)
    return i * world + rank, n * world


def run(cfg: Config, shard: tuple[int, int] | None = None) -> None:
    """Stage 1 for the experiment, or (``shard`` = (I, N)) for the I-th of N equal runs of its work items.

    Any number of processes may run it at once on one store (a SLURM array, ``torchrun`` ranks, two
    terminals): each claims the items it decodes under a lock file, skips what is done or taken, and
    the process that finds every item done writes the scores and summaries.
    """
    from shared.device import process_device
    from shared.featnet import check_weights
    from shared.locks import Claim
    from shared.split_lock import SplitLock

    t0 = time.time()
    if cfg.data.source == "simulated":  # one process writes it (experiments may share its folder)
        cfg.data_root.parent.mkdir(parents=True, exist_ok=True)
        with Claim(cfg.data_root.parent / f".{cfg.data_root.name}.claim-simulate", wait=True):
            ensure_data(cfg)
    src = DataSource.of(cfg)
    check_inputs(src, cfg.decoder.folds_needed)
    check_weights(cfg.features.network, cfg.features.weights)
    shard = this_shard(shard)
    device = process_device(cfg.device)
    store = ExperimentStore(cfg)
    # every process of this store splits its layers alike (or is refused before it writes anything); taken first,
    # so a process waiting for it (N2P_WAIT_FOR_LOCKS=1) holds no other lock
    split = SplitLock(store.decoder_dir(), cfg.decoder.part_units, cfg.decoder.chunk_units,
                      f"the layers of experiment '{cfg.experiment}' ({store.decoder_dir()})")
    with split, Run(cfg, "stage1", str(device), bdata_files(src), writes_work=True) as run_:  # released if it fails
        if _decode_all(cfg, store, src, device, shard, run_):
            log.info("stage 1 done in %.0f s; results in %s", time.time() - t0, cfg.results_path)


def _decode_all(cfg: Config, store: ExperimentStore, src: DataSource, device, shard: tuple[int, int] | None,
                run_: Run) -> bool:
    """This process's share of stage 1's work items, under its split's and its run's locks; True when every item
    is done and this process wrote the scores and summaries."""
    from stage1_decode.decode import fingerprint
    from stage1_decode.items import LayerFiles, out_splits, work_items

    from shared.datasets import brain_file
    from shared.locks import WAIT_FOR_LOCKS, Claim
    from shared.runs import sweep_temporary_files

    splits = ["train", *cfg.data.test]
    with Claim(cfg.work_path / ".claim-true-features", wait=True):  # one process computes them, the others wait
        sweep_temporary_files(store.true_file(cfg.features.layers[0], "train").parents[1])
        compute_true_features(cfg, store, device, splits)
    train_names = split_image_names(src, "train")
    keys = {(subject, roi): fingerprint(cfg, store, subject, roi, brain_file(src, subject, "train"),
                                        {split: brain_file(src, subject, split) for split in cfg.data.test})
            for subject in cfg.data.subjects for roi in cfg.data.rois}
    dec_splits = out_splits(cfg)
    items = work_items(cfg, store)
    # shard I of N takes the I-th of N consecutive runs of items: few (subject, ROI)s, so few decoders, per process
    mine = items if shard is None else items[shard[0] * len(items) // shard[1]:(shard[0] + 1) * len(items) // shard[1]]
    if shard is not None:
        log.info("stage 1 shard %d/%d: %d of %d work items", shard[0], shard[1], len(mine), len(items))
    state = _Decoding(cfg, store, src, device, train_names, keys, dec_splits, items)
    busy = [item for item in mine if not state.try_item(item, wait=False)]
    if busy and os.environ.get(WAIT_FOR_LOCKS) == "1":  # compare's stages: finish everything, however long
        log.info("stage 1: waiting for %d work item(s) other processes are decoding", len(busy))
        busy = [item for item in busy if not state.try_item(item, wait=True)]
    state.stitch_orphans()  # layers whose parts are all decoded by processes that stopped before stitching
    state.work = None
    unfinished = [it for parts in state.layers.values() if not state.layer_done(parts[0]) for it in parts]
    if unfinished:
        todo = [it for it in unfinished if not LayerFiles(store, it.subject, it.roi, it.layer).item_done(
            it, keys[(it.subject, it.roi)], dec_splits)]
        if todo:
            log.info("stage 1: %d of %d work items are still to decode (first: %s)%s; "
                     "the process that finishes the last one writes the scores and summaries (rerun stage 1 to "
                     "finish what a stopped process left)", len(todo), len(items), todo[0].label,
                     f", {len(busy)} of them being decoded by other processes" if busy else "")
        else:
            log.info("stage 1: every work item is decoded, but %d layer(s) are not stitched yet (first: %s): another "
                     "process is stitching them, or rerun stage 1", len({(i.subject, i.roi, i.layer) for i in unfinished}),
                     unfinished[0].label)
        run_.finish(items_left=len(todo))
        return False
    _write_results(cfg, store, src, keys, dec_splits, run_)
    log.info("stage 1: every work item is done; this process wrote the scores and summaries")
    run_.finish()
    return True


class _Decoding:
    """This process's share of stage 1's items: claims them one by one and decodes them, one subject and
    ROI's data and decoder held at a time."""

    def __init__(self, cfg: Config, store: ExperimentStore, src: DataSource, device, train_names: list[str],
                 keys: dict, splits: list[str], items: list):
        self.cfg, self.store, self.src, self.device, self.train_names = cfg, store, src, device, train_names
        self.keys, self.splits = keys, splits
        self.layers: dict[tuple, list] = {}  # (subject, ROI, layer) -> its items (its parts), in order
        for it in items:
            self.layers.setdefault((it.subject, it.roi, it.layer), []).append(it)
        self.work = None

    def layer_items(self, item) -> list:
        return self.layers[(item.subject, item.roi, item.layer)]

    def layer_done(self, item) -> bool:
        """``item``'s layer is decoded (and stitched) with this config: its ``done.json`` is current."""
        from stage1_decode.items import LayerFiles

        files = LayerFiles(self.store, item.subject, item.roi, item.layer)
        return files.scores(self.keys[(item.subject, item.roi)], self.splits) is not None

    def roi_work(self, subject: str, roi: str):
        if self.work is None or (self.work.subject, self.work.roi) != (subject, roi):
            self.work = None  # one subject and ROI's data and decoder at a time
            self.work = _roi_work(self.cfg, self.store, self.src, subject, roi, self.device, self.train_names)
        return self.work

    def try_item(self, item, wait: bool) -> bool:
        """Decode ``item`` unless it is done; False when another process holds it (``wait``: wait for it,
        then decode it if that process stopped before finishing)."""
        from stage1_decode.decode import _sweep
        from stage1_decode.items import LayerFiles

        from shared.locks import Claim

        files = LayerFiles(self.store, item.subject, item.roi, item.layer)
        key = self.keys[(item.subject, item.roi)]
        if files.item_done(item, key, self.splits):
            log.info("%s: already decoded (%s)", item.label, files.dir)
            return True
        claim = Claim(files.claim(item), wait=True) if wait else Claim.take(files.claim(item))
        if claim is None:
            log.info("%s: being decoded by another process; skipped", item.label)
            return False
        with claim:
            if files.item_done(item, key, self.splits):  # finished while this process looked
                return True
            left = _sweep(files.item_outputs(item, self.splits))  # a killed process's (no one else writes them)
            if left:
                log.info("deleted %d temporary file(s) an interrupted run left behind (%s)", left, item.label)
            self.roi_work(item.subject, item.roi).decode(item, self.layer_items(item))
        return True

    def stitch_orphans(self) -> None:
        from stage1_decode.items import LayerFiles

        from shared.locks import Claim

        for parts in self.layers.values():
            first = parts[0]
            files = LayerFiles(self.store, first.subject, first.roi, first.layer)
            key = self.keys[(first.subject, first.roi)]
            if len(parts) == 1 or self.layer_done(first) or not all(files.part_done(p, key, self.splits) for p in parts):
                continue
            with Claim(files.layer_claim, wait=True):  # the last part's process may be stitching it now
                stitched = self.layer_done(first)
            if not stitched:
                self.roi_work(first.subject, first.roi).stitch(parts)


def _roi_work(cfg: Config, store: ExperimentStore, src: DataSource, subject: str, roi: str, device,
              train_names: list[str]):
    """Load one subject and ROI and prepare its decoder; log (and keep) what its training data hold."""
    from stage1_decode.decode import RoiWork, _sweep

    from shared.holdout import hold_out

    from shared.locks import Claim

    train = load_split(src, subject, "train", roi, average=False)
    tests = {split: load_split(src, subject, split, roi, average=True) for split in cfg.data.test}
    # decoders never see the validation hold-out; they predict it as a test set
    train, tests = hold_out(train, tests, train_names, cfg.eval.validation_fraction, cfg.seed)
    work = RoiWork(cfg, store, subject, roi, train, tests, device, train_names)
    _log_data(subject, roi, work.report)
    kept = store.roi_dir(subject, roi) / "data.json"
    with Claim(store.roi_dir(subject, roi) / ".claim-data", wait=True):  # processes of one ROI write it in turn
        _sweep([kept])  # a killed writer's half-written file
        if not kept.is_file() or json.loads(kept.read_text()).get("fingerprint") != work.key:
            atomic_write_json(kept, {"fingerprint": work.key, "report": work.report})
    return work


def _log_data(subject: str, roi: str, report: dict) -> None:
    constant, median = report["n_constant_voxels"], report["reliability_median"]
    if constant:  # z-scoring maps them to 0 in every sample: the decoders ignore them
        log.warning("%s %s: %d of %d voxels are constant over the training trials; they carry no "
                    "information and are z-scored to 0 (ignored)", subject, roi, constant, report["n_voxels"])
    log.info("%s %s: %d voxels, median single-trial reliability %s", subject, roi, report["n_voxels"],
             "n/a (no repeated training images)" if median is None else f"{median:.3f}")


def _write_results(cfg: Config, store: ExperimentStore, src: DataSource, keys: dict, dec_splits: list[str],
                   run_) -> None:
    """Scores and summaries of a fully decoded experiment, from every layer's ``done.json`` (once per
    finished set of items: under the results folder's lock, whichever process finished last; released if it
    fails)."""
    from shared.locks import ExperimentLock

    results = cfg.results_path
    with ExperimentLock.acquire(results, f"the results of experiment '{cfg.experiment}' ({results})", wait=True):
        _write_locked(cfg, store, src, keys, dec_splits, run_)


def _write_locked(cfg: Config, store: ExperimentStore, src: DataSource, keys: dict, dec_splits: list[str],
                  run_) -> None:
    from stage1_decode.decode import data_report
    from stage1_decode.items import LayerFiles

    from shared.holdout import hold_out
    from shared.runs import sweep_temporary_files

    results = cfg.results_path
    sweep_temporary_files(results, recursive=False)  # runs/ holds other processes' files (on other hosts too)
    decoding: dict = {}  # split -> subject -> roi -> layer -> scores
    reports: dict = {}
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            key = keys[(subject, roi)]
            kept = store.roi_dir(subject, roi) / "data.json"
            report = json.loads(kept.read_text()) if kept.is_file() else {}
            if report.get("fingerprint") == key:
                report = report["report"]
            else:  # decoded by an earlier version, or its data replaced since
                trials = load_split(src, subject, "train", roi, average=False)
                report = data_report(hold_out(trials, {}, split_image_names(src, "train"),
                                              cfg.eval.validation_fraction, cfg.seed)[0])
                _log_data(subject, roi, report)
            reports.setdefault(subject, {})[roi] = report
            for layer in cfg.features.layers:
                scores = LayerFiles(store, subject, roi, layer).scores(key, dec_splits)
                for split, s in scores.items():
                    decoding.setdefault(split, {}).setdefault(subject, {}).setdefault(roi, {})[layer] = s
    spec = parse_weights(cfg.features.weights)
    first = next(iter(cfg.data.test))
    path = results / "metrics.json"
    _drop_stale_sections(path, decoding, first)
    info = {"network": cfg.features.network, "weights": cfg.features.weights, "weights_label": spec.label,
            "layers": cfg.features.layers, "decoder": cfg.decoder.label, "test_set": first,
            "data": f"{cfg.data.source} ({cfg.data_root})"}
    sections = {section_key("decoding", split, first): dec for split, dec in decoding.items()}
    metrics = update_metrics(path, {"experiment": cfg.experiment, "result_version": RESULT_VERSION, "info": info,
                                    "data": reports, **sections},
                             "stage1", run_.dir)
    for key, dec in sections.items():
        write_table(results / key, decoding_rows(dec), DECODING_COLUMNS)
    decoding_plot(decoding[first], cfg.features.layers, results / "decoding.png",
                  title=f"{cfg.features.network} [{spec.label}], {named_test_images(first)}")
    write_summary(results, metrics)


def _drop_stale_sections(path, decoding: dict, first: str) -> None:
    """Remove decoding and reconstruction sections that this run's decoding supersedes.

    Reconstructions are kept only while the decoded features they came from are unchanged.
    """
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    new = {section_key("decoding", split, first): dec for split, dec in decoding.items()}
    if all(old.get(k) == v for k, v in new.items()) and all(k in new for k in old if k.startswith("decoding")):
        return
    kept = {k: v for k, v in old.items() if not k.startswith(("decoding", "reconstruction", "runs"))}
    if any(k.startswith("reconstruction") for k in old):
        log.info("decoded features changed: removed the old reconstruction results; rerun stage 2")
        for stale in [*path.parent.glob("grid*.png"), *path.parent.glob("reconstruction*.*"),
                      *path.parent.glob("validation.*"), *path.parent.glob("per_image.json")]:
            stale.unlink()
    atomic_write_json(path, kept)


def add_run_arguments(parser) -> None:
    parser.add_argument("--shard", metavar="I/N", help="decode only the I-th of N equal runs of the work items "
                        "(subject, ROI, layer or part of one), counting from 0: N processes with I = 0..N-1 (a SLURM "
                        "array) complete the experiment between them, and the last to finish writes the scores; "
                        "under torchrun each rank takes its share")


def run_verb(args) -> None:
    """``run`` with its own option (``--shard``): the config is read here."""
    import sys

    from shared.config import dump_yaml, load_config

    shard = parse_shard(args.shard)
    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        sys.stdout.write(dump_yaml(cfg))
        return
    run(cfg, shard)
