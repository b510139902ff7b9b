"""Stage 2 on decoded features imported from the lab's files (``stage1_decode import-lab``), not decoded by stage 1.

The lab's decoded feature files hold the test images only. Two things stage 2's defaults read are
made by stage 1 alone: the out-of-fold decoded features of the training images
(``generator.train_inputs: oof``, or ``mix`` with ``mix_oof`` > 0) and the decoded features of the
validation hold-out (``eval.validation_fraction`` > 0). When the store's decoded test features of
the conditioning layers were imported (their ``provenance`` names the lab folder) and either is
missing, ``adapt`` returns the config stage 2 then runs, changed in the open:

* no out-of-fold features: their share of the training inputs is drawn from the true features
  (``oof`` becomes ``true``; ``mix`` moves ``mix_oof`` onto ``mix_true``): the generator is
  trained on true features, as the lab's own generators are;
* no decoded hold-out: no hold-out (``eval.validation_fraction`` 0), as when it is set to 0: every
  training image trains, the last tick reconstructs, settings chosen on the hold-out keep their
  untuned values. Scoring held-out images from their true features would rank ticks and
  methods by another input than the test images', so it is not done.

A store that has them (stage 1 ran there) is left as it is, and so is every config of a stage-1
store: their runs compute what they did before. One warning line says what changed, and
``record`` is kept in ``metrics.json`` (``reconstruction_info.lab_import``) and stated in
``summary.md``. The same run with those settings given (``--set generator.train_inputs=true --set
eval.validation_fraction=0``) changes nothing and computes the same numbers.
"""

from __future__ import annotations

import copy
import json
import logging

from shared.config import Config
from shared.holdout import VALIDATION
from shared.store import IMPORTED_FROM, ExperimentStore

log = logging.getLogger(__name__)

OOF = "train_oof"


def _uses_oof(cfg: Config) -> bool:
    g = cfg.generator
    return g.train_inputs == "oof" or (g.train_inputs == "mix" and g.mix_oof > 0)


def imported_root(cfg: Config, store: ExperimentStore) -> str | None:
    """The lab folder the store's decoded test features of the conditioning layers were imported from (the
    first one named), or None when any of them is absent or was decoded by stage 1."""
    roots = []
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            for layer in cfg.generator.condition_layers:
                for split in cfg.data.test:
                    if not store.decoded_file(subject, roi, layer, split).is_file():
                        return None
                    with store.open_decoded(subject, roi, layer, split) as arr:
                        provenance = arr.attrs.get("provenance") or "{}"
                    root = json.loads(provenance).get(IMPORTED_FROM) if isinstance(provenance, str) else None
                    if root is None:
                        return None
                    roots.append(root)
    return roots[0] if roots else None


def _missing(cfg: Config, store: ExperimentStore, split: str) -> str | None:
    """``'<subject> <roi> <layer>'`` of the first conditioning layer without decoded ``split`` features."""
    for subject in cfg.data.subjects:
        for roi in cfg.data.rois:
            for layer in cfg.generator.condition_layers:
                if not store.decoded_file(subject, roi, layer, split).is_file():
                    return f"{subject} {roi} {layer}"
    return None


def adapt(cfg: Config, store: ExperimentStore, say: bool = True) -> tuple[Config, dict | None]:
    """``(the config stage 2 runs, the record of what changed)``: ``cfg`` itself and None unless the decoded test
    features were imported and lack what the settings read (see the module's docstring); ``say``: log the line
    (one process of several says it)."""
    no_oof = _uses_oof(cfg) and _missing(cfg, store, OOF)
    no_held = cfg.eval.validation_fraction > 0 and _missing(cfg, store, VALIDATION)
    if not (no_oof or no_held):
        return cfg, None
    root = imported_root(cfg, store)
    if root is None:  # stage 1's store: its own errors say what to rerun
        return cfg, None
    out = copy.deepcopy(cfg)
    record: dict = {"imported_from": root}
    said = []
    if no_oof:
        g = out.generator
        if g.train_inputs == "oof":
            g.train_inputs = "true"
        else:
            g.mix_true, g.mix_oof = g.mix_true + g.mix_oof, 0.0
        record["train_inputs"] = {"configured": _inputs(cfg), "used": _inputs(out)}
        what = "trains on true features" if g.train_inputs == "true" else \
            "draws its out-of-fold share from true features"
        said.append(f"the generator {what} (generator.train_inputs={_inputs(out)}, not {_inputs(cfg)}: the store "
                    f"has no out-of-fold features of the training images)")
    if no_held:
        out.eval.validation_fraction = 0.0
        record["validation_fraction"] = {"configured": cfg.eval.validation_fraction, "used": 0.0}
        said.append(f"no validation hold-out (eval.validation_fraction=0, not {cfg.eval.validation_fraction}: "
                    f"the store has no decoded held-out training images; every training image trains and the "
                    f"last tick reconstructs)")
    record["note"] = (f"Decoded features imported from lab files ({root}), not decoded by stage 1: "
                      + "; ".join(said) + ".")
    if say:
        log.warning("%s Recorded in metrics.json (reconstruction_info.lab_import).", record["note"])
    return out, record


def _inputs(cfg: Config) -> str:
    g = cfg.generator
    if g.train_inputs != "mix":
        return g.train_inputs
    return f"mix (true {g.mix_true:g}, corrupted {g.mix_corrupted:g}, oof {g.mix_oof:g})"
