"""The one scorer: every number that rates a decoding or a reconstruction is computed here.

* **Reconstructions** (stage 2): ``score`` gives per-image values of each metric for images
  ``(n, 3, S, S)`` in [0, 1] against the true images. The Kamitani lab's evaluation
  (brain-decoding-cookbook ``recon_eval_image.py``) under the names ``LAB_NAMES`` gives them:
  ``pixcorr`` (pixel pattern correlation), ``ssim``, ``rmse``, ``pairwise_id_pixel`` and
  ``pairwise_id_pixel_euclid`` (identification by pixel correlation and by Euclidean distance);
  then the judge network's pairwise identification per layer (``alexnet2``, ``alexnet5``, ...,
  named by ``judge_name``), its top-1 identification among all n test images (``nway<n>_alexnet5``:
  harder, so methods that saturate the pairwise scores still separate) and the pixel n-way hits
  (``nway<n>_id_pixel``, n = min(10, test images)). Names carry their actual n.
  ``metrics.json`` holds their means (``metrics.summarise``).
  ``ValidationScorer`` scores the validation hold-out the same way (every tick and the final table).
  Scores are taken at one size (``at_size``), a grayscale set in gray.
* **The judge**: a feature network no loss or optimisation looks through
  (``eval.judge_network`` and ``eval.judge_weights``; ``shared/config/checks.py`` refuses one that
  is), built by stage 2 as a ``shared.featnet.FeatureNet`` (``conv5`` of AlexNet is the module
  ``shared/layers.py`` names); ``judge_features`` gives its flattened features per layer.
* **Decoded features** (stage 1): ``DecodingScores`` accumulates profile correlation, pattern
  correlation and pairwise identification over chunks of units, so no whole layer is held.
* **Order and labels**: ``metric_order`` (the column order of tables and ``compare``),
  ``metric_label`` (each metric's meaning, with the lab's name where it has one; ``metrics.json``
  keeps them in ``reconstruction_info.metric_names``), ``VALIDATION_SHOWN`` (the validation columns
  shown beside the test ones). Every metric but ``rmse`` is better higher.

The formulas themselves (correlations, SSIM, identification) are in ``shared/metrics.py``.
"""

from __future__ import annotations

import re

import numpy as np

from shared import metrics as M

VALIDATION_SHOWN = ("pixcorr", "ssim")  # validation scores shown beside the test scores
PIXEL_METRICS = ("pixcorr", "ssim")  # the validation scores (every tick's and the final table's), with the judge's
LOWER_IS_BETTER = ("rmse",)
# the lab's evaluation (brain-decoding-cookbook recon_eval_image.py) under its names
LAB_NAMES = {
    "pixcorr": "pixel pattern correlation",
    "ssim": "ssim",
    "rmse": "pixel rmse",
    "pairwise_id_pixel": "identification accuracy by pixel pattern correlation",
    "pairwise_id_pixel_euclid": "identification accuracy by pixel euclidean distance",
}
_NWAY = re.compile(r"nway(\d+)_(.+)")
_FIXED = ("pixcorr", "ssim", "rmse")
_PIXEL_ID = ("pairwise_id_pixel", "pairwise_id_pixel_euclid")


def metric_order(keys) -> list[str]:
    """``keys`` (metric names) in table order: the pixel metrics, the judge's pairwise identification per
    layer (and any other metric, in the order given), its top-1 identification per layer, pixel
    identification, pixel n-way."""
    keys = list(dict.fromkeys(keys))

    def rank(k: str) -> tuple:
        if k in _FIXED:
            return (0, _FIXED.index(k))
        if k in _PIXEL_ID:
            return (3, _PIXEL_ID.index(k))
        m = _NWAY.fullmatch(k)
        if m and m.group(2) == "id_pixel":
            return (4, 0)
        if m:
            return (2, keys.index(k))
        return (1, keys.index(k))  # the judge's pairwise identification (alexnet2, ...)

    return sorted(keys, key=rank)


def metric_label(key: str) -> str:
    """What a metric column holds, in words (the lab's name first where it has one)."""
    m = _NWAY.fullmatch(key)
    if key in LAB_NAMES:
        extra = {"pixcorr": "Pearson r over pixels",
                 "ssim": "structural similarity, Gaussian window 11, SD 1.5, on luminance; the lab averages the "
                         "RGB channels'",
                 "rmse": "in 0-1 intensities, lower is better; x255 for the lab's 8-bit values",
                 "pairwise_id_pixel": "2-way, chance 0.5", "pairwise_id_pixel_euclid": "2-way, chance 0.5"}[key]
        return f"{LAB_NAMES[key]} ({extra})"
    if m and m.group(2) == "id_pixel":
        return f"{m.group(1)}-way identification by pixel correlation (random distractors, chance 1/{m.group(1)})"
    if m:
        return (f"top-1 identification among all {m.group(1)} test images by the judge's {m.group(2)} features "
                f"(chance 1/{m.group(1)})")
    return f"identification accuracy by the judge's {key} features (2-way by correlation, chance 0.5)"


def check_judge_independent(cfg) -> str:
    """Refuse, in one line, a judge whose weights are those of a network a loss or an optimisation looks
    through (compared by content: ``featnet.weights_digest``, so two spellings of one file are one
    network); returns the judge's identity (``judge_identity``). ``shared/config/checks.py`` refuses the same
    by the settings' labels when the config is loaded; this catches what labels cannot (a copied ``.pth``,
    ``imagenet`` and the cached file). Two ``random:<seed>`` settings of one network are compared by their
    seeds (one network and seed generate one set of weights), so no network is built for them."""
    from shared.config import judge_users
    from shared.errors import UserError

    e = cfg.eval
    judge = judge_identity(e.judge_network, e.judge_weights)
    for what, keys, network, weights in judge_users(cfg):
        if network == e.judge_network and same_judge(network, (weights, judge_identity(network, weights)),
                                                     (e.judge_weights, judge)):
            shown = judge if judge.startswith("random:") else f"sha256 {judge}"
            raise UserError(f"the judge (eval.judge_network/judge_weights: {e.judge_network}, {e.judge_weights}) has "
                            f"the same weights ({shown}) as the network {what} looks through ({keys}: {network}, "
                            f"{weights}), so its scores would not be independent; give the judge other weights")
    return judge


def judge_identity(network: str, weights: str) -> str:
    """The judge's weights as one text: ``random:<seed>`` for generated weights (no network is built), else the
    SHA-256 digest of the weights (``featnet.weights_digest``). ``same_judge`` tells two of them apart by
    content."""
    from shared.weights import parse_weights

    spec = parse_weights(weights)
    if spec.kind == "random":
        return f"random:{spec.seed}"
    from shared.featnet import weights_digest

    return weights_digest(network, weights)


def same_judge(network: str, a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether two judges' weights ``(setting, judge_identity)`` of ``network`` are the same weights: by their
    identities, and where one is generated and the other a file, by the digests of both."""
    if a[1] == b[1]:
        return True
    if a[1].startswith("random:") == b[1].startswith("random:"):
        return False  # two seeds, or two digests, that differ
    from shared.featnet import weights_digest

    return weights_digest(network, a[0]) == weights_digest(network, b[0])


def judge_name(network: str, layer: str) -> str:
    """The field's name of an identification metric: ``alexnet2`` for AlexNet conv2, else ``<net>_<layer>``."""
    if network == "alexnet" and layer.startswith("conv"):
        return f"alexnet{layer[4:]}"
    return f"{network}_{layer}"


def judge_features(judge, images: np.ndarray, device, batch: int = 50) -> dict[str, np.ndarray]:
    """Judge-network features of images ``(n, 3, S, S)``, flattened per layer."""
    import torch

    out: dict[str, list] = {}
    with torch.no_grad():
        for s in range(0, len(images), batch):
            for k, v in judge(torch.from_numpy(images[s:s + batch]).to(device)).items():
                out.setdefault(k, []).append(v.flatten(1).float().cpu().numpy())
    return {judge_name(judge.network, k): np.concatenate(v) for k, v in out.items()}


def score(recon: np.ndarray, true: np.ndarray, true_feats: dict[str, np.ndarray], judge, device,
          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image reconstruction metrics of ``recon`` against ``true`` (both ``(n, 3, S, S)`` in
    [0, 1]); ``true_feats`` are ``judge_features`` of ``true``. ``metrics.json`` holds their means."""
    corr = M.corr_matrix(recon, true)
    fr = judge_features(judge, recon, device)
    judged = {k: M.corr_matrix(fr[k], true_feats[k]) for k in true_feats}
    n = len(true)
    return {
        "pixcorr": np.diag(corr).copy(),
        "ssim": M.ssim(recon, true),
        "rmse": M.rmse(recon, true),
        **{k: M.pairwise_identification(None, None, corr=c) for k, c in judged.items()},
        **{f"nway{n}_{k}": M.top1_hits(c) for k, c in judged.items()},
        "pairwise_id_pixel": M.pairwise_identification(None, None, corr=corr),
        "pairwise_id_pixel_euclid": M.euclidean_identification(recon, true),
        f"nway{min(10, n)}_id_pixel": M.nway_hits(corr, min(10, n), rng),
    }


def distractor_rng(seed: int, split: str) -> np.random.Generator:
    """The generator of the n-way distractors of one test set: seeded by the experiment's seed and the set's
    name alone, so every method, subject, ROI and compare variant is scored against the same distractors
    (rows of one table differ by the method, not by the draw)."""
    import zlib

    return np.random.default_rng([seed, zlib.crc32(split.encode())])


def validation_value(scores: dict[str, float], metric: str) -> float:
    """The value of ``eval.validation_metric`` in ``scores``: ``pixcorr``, ``ssim`` or their mean ``pixcorr_ssim``."""
    return (scores["pixcorr"] + scores["ssim"]) / 2 if metric == "pixcorr_ssim" else scores[metric]


def means(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """``{metric: mean over images}`` of ``score``'s per-image values."""
    return {k: M.summarise(v) for k, v in per_image.items()}


def at_size(images: np.ndarray, size: int, clip: bool = True) -> np.ndarray:
    """``(n, C, S, S)`` images resampled to ``size`` (area-averaged when shrunk, bilinear when enlarged),
    in [0, 1] (``clip=False``: as resampled, e.g. a prediction still to be rescaled); images already at
    ``size`` are returned as they are."""
    import torch

    if images.shape[-1] == size:
        return images
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    mode = {"mode": "area"} if size < images.shape[-1] else {"mode": "bilinear", "align_corners": False}
    out = torch.nn.functional.interpolate(t, size=(size, size), **mode)
    return (out.clamp(0, 1) if clip else out).numpy()


def is_grayscale(images: np.ndarray) -> bool:
    """True when every image has equal channels (a grayscale stimulus set)."""
    return bool(np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 0], images[:, 2]))


def as_scored(images: np.ndarray, size: int, gray: bool) -> np.ndarray:
    """Reconstructions as they are scored: at ``size`` px, in gray (repeated to RGB) for a grayscale set."""
    images = at_size(images, size)
    return np.repeat(images.mean(axis=1, keepdims=True), 3, axis=1) if gray else images


class ValidationScorer:
    """Scores of reconstructions of the held-out training images ``images`` (pixel metrics and the
    judge's), at ``size`` px like the test images: every tick's, and the final validation table's.
    ``per_image`` gives them per held-out image (what a tick choice bootstraps over), ``__call__`` their
    means, ``values`` the per-image values of ``eval.validation_metric``."""

    def __init__(self, images: np.ndarray, judge, device, seed: int, size: int):
        self.images = at_size(images, size)
        self.truth = judge_features(judge, self.images, device)
        self.gray = is_grayscale(self.images)
        self.judge, self.device, self.seed, self.size = judge, device, seed, size

    def per_image(self, recon: np.ndarray, with_judge: bool = True) -> dict[str, np.ndarray]:
        """``{metric: (n_held,)}``: the pixel metrics, and the judge's identification when ``with_judge``."""
        recon = as_scored(recon, self.size, self.gray)
        if not with_judge:
            return {"pixcorr": np.diag(M.corr_matrix(recon, self.images)).copy(),
                    "ssim": np.asarray(M.ssim(recon, self.images))}
        per = score(recon, self.images, self.truth, self.judge, self.device, np.random.default_rng(self.seed))
        return {k: v for k, v in per.items() if k in PIXEL_METRICS or k in self.truth}

    def __call__(self, recon: np.ndarray, with_judge: bool = True) -> dict[str, float]:
        return means(self.per_image(recon, with_judge))

    def values(self, recon: np.ndarray, metric: str) -> np.ndarray:
        """Per-image values ``(n_held,)`` of ``metric`` (``eval.validation_metric``) of ``recon``."""
        return np.asarray(validation_value(self.per_image(recon, False), metric), dtype=np.float64)


class DecodingScores:
    """Decoding scores of one test split, accumulated over chunks of units: profile correlation (per
    unit, across images), pattern correlation (per image, across units, z-scored by the training
    statistics) and pairwise identification by those pattern correlations."""

    def __init__(self, n: int):
        self.profile: list[np.ndarray] = []
        self.sp = np.zeros(n)
        self.st = np.zeros(n)
        self.spp = np.zeros(n)
        self.stt = np.zeros(n)
        self.cross = np.zeros((n, n))  # sum over units of z_pred[i] * z_true[j]
        self.units = 0

    def add(self, pred: np.ndarray, true: np.ndarray, stats_mean: np.ndarray, stats_std: np.ndarray) -> None:
        self.profile.append(M.profile_correlation(pred, true))
        zp = ((pred - stats_mean) / stats_std).astype(np.float64)
        zt = ((true - stats_mean) / stats_std).astype(np.float64)
        self.sp += zp.sum(1)
        self.st += zt.sum(1)
        self.spp += (zp**2).sum(1)
        self.stt += (zt**2).sum(1)
        self.cross += (zp.astype(np.float32) @ zt.T.astype(np.float32)).astype(np.float64)  # float32 product per chunk
        self.units += pred.shape[1]

    SUMS = ("sp", "st", "spp", "stt", "cross")

    def state(self) -> dict[str, np.ndarray]:
        """What ``merge`` needs to combine this range of units with others (saved by a part of a layer)."""
        return {"profile": np.concatenate(self.profile) if self.profile else np.zeros(0),
                **{k: getattr(self, k) for k in self.SUMS}, "units": np.array(self.units)}

    @classmethod
    def merge(cls, states: list[dict]) -> "DecodingScores":
        """The scores of consecutive ranges of units, from their ``state``s in unit order."""
        out = cls(len(states[0]["sp"]))
        for st in states:
            out.profile.append(np.asarray(st["profile"]))
            for k in cls.SUMS:
                setattr(out, k, getattr(out, k) + st[k])
            out.units += int(st["units"])
        return out

    def result(self) -> dict:
        u = self.units
        cov = self.cross - np.outer(self.sp, self.st) / u
        var_p = self.spp - self.sp**2 / u
        var_t = self.stt - self.st**2 / u
        corr = cov / np.sqrt(np.outer(var_p, var_t) + 1e-30)
        return {
            "profile_corr": M.summarise(np.concatenate(self.profile)),
            "pattern_corr": M.summarise(np.diag(corr)),
            "pairwise_id": M.summarise(M.pairwise_identification(None, None, corr=corr)),
        }
