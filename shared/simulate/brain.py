"""A brain-like voxel encoding model, deliberately unlike the decoder's DNN.

Images are first turned into retinotopic *channel maps* (``channel_maps``): local
contrast energy from a log-Gabor filter bank (4 orientations x 2 spatial frequencies,
quadrature-pair energy), luminance and two colour-opponent signals (L-M, S-(L+M)) as
deviations from mean grey, and local colour saturation. Then each voxel responds:

* V1, V2, V3, V4 (and unassigned "other" VC voxels): a Gaussian population receptive
  field (pRF) whose size grows with eccentricity and along the hierarchy, summing
  contrast energy with weak orientation and eccentricity-dependent spatial-frequency
  tuning, passed through a compressive static nonlinearity (exponent falling from V1
  to V4, as in CSS models). A weaker linear luminance and colour term is added through
  a difference-of-Gaussians pRF (suppressive surround, so uniform fields drive it
  little): its variance across images is ``luminance_share`` / ``colour_share`` times
  the contrast term's.
* LOC, FFA, PPA: non-linear statistics of large pooled regions (log energy, products
  of pooled channels, spatial variability of energy, saturation), mixed with ROI-specific
  emphasis (FFA central, PPA peripheral/low frequency) and rectified by a softplus.

Trial responses add what decides the difficulty of real decoding: fixation jitter (the
maps shift by a random sub-pixel offset each trial), a trial-to-trial multiplicative
gain, noise shared by all voxels (global factors), spatially smooth noise over cortical
positions and independent noise. Each voxel's noise variance follows from a target
single-trial reliability drawn from a Beta distribution (median ``reliability_median``
for V1, lower further up), so noise is calibrated in the units neuroscientists report,
not against any decoder or generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.config import SimulationConfig

SURROUND_SCALE = 2.5  # surround sigma / centre sigma
SURROUND_WEIGHT = 0.95  # surround integral / centre integral
MAP_SIZE = 32  # channel maps are pooled to MAP_SIZE x MAP_SIZE
ORIENTATIONS = 4
FREQS = (0.08, 0.2)  # log-Gabor centre frequencies in cycles/pixel at 64 px (scaled with image size)
N_ENERGY = ORIENTATIONS * len(FREQS)
CH_LUM, CH_RG, CH_BY, CH_SAT = N_ENERGY, N_ENERGY + 1, N_ENERGY + 2, N_ENERGY + 3
N_CHANNELS = N_ENERGY + 4

RETINOTOPIC = ("V1", "V2", "V3", "V4", "other")
HIGHER = ("LOC", "FFA", "PPA")
# pRF size sigma = a + b * eccentricity (degrees); compressive exponent; reliability scale
ROI_PARAMS = {
    "V1": dict(a=0.15, b=0.10, exponent=0.9, rel=1.0),
    "V2": dict(a=0.25, b=0.15, exponent=0.8, rel=0.95),
    "V3": dict(a=0.35, b=0.22, exponent=0.7, rel=0.85),
    "V4": dict(a=0.6, b=0.32, exponent=0.6, rel=0.75),
    "other": dict(a=1.0, b=0.45, exponent=0.6, rel=0.35),
    "LOC": dict(rel=0.6), "FFA": dict(rel=0.5), "PPA": dict(rel=0.5),
}
ROI_ORDER = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "other")


def _log_gabor_bank(size: int) -> np.ndarray:
    """One-sided log-Gabor filters in the 2-D frequency domain, ``(N_ENERGY, size, size)``."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    theta = np.arctan2(fy, fx)
    scale = 64.0 / size
    bank = []
    for f0 in FREQS:
        radial = np.exp(-(np.log(radius / (f0 * scale)) ** 2) / (2 * np.log(0.6) ** 2))
        radial[0, 0] = 0.0
        for k in range(ORIENTATIONS):
            ang = k * np.pi / ORIENTATIONS
            d = np.angle(np.exp(1j * (theta - ang)))  # one-sided: only |d| < pi/2 kept
            angular = np.exp(-(d**2) / (2 * (np.pi / ORIENTATIONS / 1.2) ** 2))
            bank.append(radial * angular)
    return np.stack(bank).astype(np.float32)


def channel_maps(images: np.ndarray) -> torch.Tensor:
    """Retinotopic channel maps of images.

    images: ``(n, 3, S, S)`` RGB in [0, 1]. Returns ``(n, N_CHANNELS, MAP_SIZE, MAP_SIZE)``
    float32; every channel is 0 for a uniform mean-grey image.
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    n, _, size, _ = x.shape
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    rg = r - g
    by = b - 0.5 * (r + g)
    bank = torch.from_numpy(_log_gabor_bank(size))
    # energy of log luminance: contrast in Weber units, blind to overall brightness
    spec = torch.fft.fft2(torch.log(lum + 0.05))[:, None] * bank[None]
    energy = torch.fft.ifft2(spec).abs()  # quadrature-pair energy, (n, N_ENERGY, S, S)
    sat = torch.sqrt(rg**2 + by**2 + 1e-6)
    maps = torch.cat([energy, (lum - 0.5)[:, None], rg[:, None], by[:, None], sat[:, None]], dim=1)
    return torch.nn.functional.adaptive_avg_pool2d(maps, MAP_SIZE)


@dataclass
class Brain:
    """One simulated subject: voxel ROIs, positions, pRFs, tuning and noise parameters."""

    roi: np.ndarray  # (n_vox,) ROI name per voxel
    position: np.ndarray  # (n_vox, 3) cortical coordinates in mm
    prf: torch.Tensor  # (n_retino, MAP_SIZE**2) pRF weights of retinotopic voxels
    prf_linear: torch.Tensor  # (n_retino, MAP_SIZE**2) difference-of-Gaussians pRF (luminance)
    prf_colour: torch.Tensor  # (n_retino, MAP_SIZE**2) balanced DoG pRF (colour opponency)
    retino_idx: np.ndarray  # indices of retinotopic voxels
    higher_idx: np.ndarray  # indices of LOC/FFA/PPA voxels
    w_energy: torch.Tensor  # (n_retino, N_ENERGY)
    w_linear: torch.Tensor  # (n_retino, 3) luminance, L-M, S-(L+M) weights (rescaled in calibrate)
    exponent: torch.Tensor  # (n_retino,)
    pool: torch.Tensor  # (n_windows, MAP_SIZE**2) large pooling windows for higher ROIs
    pair_idx: np.ndarray  # (n_pairs, 2) descriptor pairs whose products drive higher ROIs
    w_higher: torch.Tensor  # (n_higher, n_descriptors)
    reliability: np.ndarray  # (n_vox,) target single-trial reliability
    noise_loadings: np.ndarray  # (n_vox, n_factors) shared noise
    spatial_basis: np.ndarray  # (n_vox, n_basis) spatially smooth noise
    baseline: np.ndarray  # (n_vox,) mean response (scaled by the trial gain)
    # set by calibrate():
    desc_mean: torch.Tensor | None = None
    desc_std: torch.Tensor | None = None
    sig_mean: np.ndarray | None = None
    sig_std: np.ndarray | None = None
    noise_sd: np.ndarray | None = None

    @property
    def n_voxels(self) -> int:
        return len(self.roi)


def _sample_eccentricity(rng: np.random.Generator, n: int, e_max: float, e0: float = 0.75) -> np.ndarray:
    """Eccentricities with cortical magnification: density proportional to 1/(e + e0)^2."""
    u = rng.uniform(0, 1, n)
    a, b = 1 / e0, 1 / (e_max + e0)
    return 1 / (a - u * (a - b)) - e0


def make_brain(cfg: SimulationConfig, rng: np.random.Generator) -> Brain:
    """Draw one subject's voxels and their tuning."""
    counts = {
        "V1": cfg.voxels_v1, "V2": cfg.voxels_v2, "V3": cfg.voxels_v3, "V4": cfg.voxels_v4,
        "LOC": cfg.voxels_loc, "FFA": cfg.voxels_ffa, "PPA": cfg.voxels_ppa, "other": cfg.voxels_other,
    }
    roi = np.concatenate([[name] * counts[name] for name in ROI_ORDER]).astype(object)
    n_vox = len(roi)
    half = cfg.image_extent_deg / 2
    retino_idx = np.flatnonzero(np.isin(roi, RETINOTOPIC))
    higher_idx = np.flatnonzero(np.isin(roi, HIGHER))

    # --- retinotopic voxels: pRF centre, size, tuning
    n_r = len(retino_idx)
    ecc = _sample_eccentricity(rng, n_r, e_max=half * 1.35)
    ang = rng.uniform(-np.pi, np.pi, n_r)
    cx, cy = ecc * np.cos(ang), ecc * np.sin(ang)
    r_roi = roi[retino_idx]
    a = np.array([ROI_PARAMS[r]["a"] for r in r_roi])
    b = np.array([ROI_PARAMS[r]["b"] for r in r_roi])
    sigma = (a + b * ecc) * rng.uniform(0.8, 1.25, n_r)
    coords = (np.arange(MAP_SIZE) + 0.5) / MAP_SIZE * 2 * half - half  # degrees
    gx, gy = np.meshgrid(coords, coords, indexing="xy")
    d2 = (gx.ravel()[None] - cx[:, None]) ** 2 + (gy.ravel()[None] - cy[:, None]) ** 2
    pix_deg = 2 * half / MAP_SIZE
    prf = np.exp(-d2 / (2 * sigma[:, None] ** 2))
    prf[prf < 1e-4] = 0.0  # the far tail is below float32 precision (and denormals are slow)
    prf *= pix_deg**2 / (2 * np.pi * sigma[:, None] ** 2)
    # luminance/colour act through a difference-of-Gaussians pRF (suppressive surround,
    # Zuiderbaan et al. 2012): uniform fields drive voxels weakly, edges and blobs strongly
    sigma_s = SURROUND_SCALE * sigma[:, None]
    surround = np.exp(-d2 / (2 * sigma_s**2)) * pix_deg**2 / (2 * np.pi * sigma_s**2)
    prf_linear = prf - SURROUND_WEIGHT * surround
    prf_linear[np.abs(prf_linear) < 1e-4 * np.abs(prf_linear).max(axis=1, keepdims=True)] = 0.0
    # colour acts through balanced (double-opponent) pRFs: colour edges, not uniform hue
    prf_colour = prf - surround
    prf_colour[np.abs(prf_colour) < 1e-4 * np.abs(prf_colour).max(axis=1, keepdims=True)] = 0.0
    pref_ori = rng.uniform(0, np.pi, n_r)
    kappa = rng.uniform(0.0, 0.4, n_r)
    oris = np.arange(ORIENTATIONS) * np.pi / ORIENTATIONS
    ori_w = 1 + kappa[:, None] * np.cos(2 * (oris[None] - pref_ori[:, None]))
    high_sf = 1 / (1 + np.exp((ecc - 2.5) / 1.2))  # foveal voxels prefer the higher frequency
    sf_w = np.stack([1 - 0.6 * high_sf, 0.4 + 0.6 * high_sf], axis=1) * rng.uniform(0.7, 1.3, (n_r, 2))
    w_energy = (sf_w[:, :, None] * ori_w[:, None, :]).reshape(n_r, N_ENERGY)
    w_linear = rng.normal(0, 1, (n_r, 3))
    exponent = np.array([ROI_PARAMS[r]["exponent"] for r in r_roi])

    # --- higher ROIs: large pooling windows (3x3 grid + whole field) and mixed statistics
    centres = [(-4, -4), (0, -4), (4, -4), (-4, 0), (0, 0), (4, 0), (-4, 4), (0, 4), (4, 4)]
    windows = [np.exp(-((gx - ux * half / 6) ** 2 + (gy - uy * half / 6) ** 2) / (2 * (half / 3) ** 2)) for ux, uy in centres]
    windows.append(np.ones_like(gx))
    pool = np.stack([w.ravel() / w.sum() for w in windows])
    n_win = len(windows)
    n_lin = n_win * (N_ENERGY + 1)
    pair_idx = rng.integers(0, n_lin, (120, 2))
    n_desc = n_lin * 2 + len(pair_idx) + N_ENERGY
    n_h = len(higher_idx)
    w_higher = rng.normal(0, 1, (n_h, n_desc)) * (rng.uniform(0, 1, (n_h, n_desc)) < 0.3)
    emphasis = np.ones((n_h, n_desc))
    win_of_desc = np.concatenate([np.repeat(np.arange(n_win), N_ENERGY + 1)] * 2)
    for i, r in enumerate(roi[higher_idx]):
        if r == "FFA":  # central windows dominate
            emphasis[i, : 2 * n_lin] = np.where(win_of_desc == 4, 3.0, 0.5)
        elif r == "PPA":  # peripheral windows and the whole field dominate
            emphasis[i, : 2 * n_lin] = np.where(win_of_desc == 4, 0.3, 1.5)
    w_higher *= emphasis

    # --- cortical positions (mm): each ROI a patch of a folded sheet; retinotopy inside
    position = np.zeros((n_vox, 3))
    offsets = {"V1": 0, "V2": 1, "V3": 2, "V4": 3, "LOC": 4, "FFA": 5, "PPA": 6, "other": 7}
    for name in ROI_ORDER:
        idx = np.flatnonzero(roi == name)
        base = np.array([offsets[name] * 25.0, 0.0, 0.0])
        if name in RETINOTOPIC:
            k = np.searchsorted(retino_idx, idx)
            px = 12 * np.log1p(ecc[k] / 0.75)
            py = 8 * ang[k]
        else:
            px, py = rng.uniform(0, 20, len(idx)), rng.uniform(-25, 25, len(idx))
        position[idx] = base + np.stack([px, py, rng.uniform(0, 3, len(idx))], axis=1)

    # --- noise parameters
    rel_scale = np.array([ROI_PARAMS[r]["rel"] for r in roi])
    med = cfg.reliability_median * rel_scale
    concentration = 5.0
    reliability = rng.beta(med * concentration + 0.3, (1 - med) * concentration + 0.3)
    reliability = np.clip(reliability, 0.005, 0.9)
    n_factors = 5
    noise_loadings = rng.normal(0, 1, (n_vox, n_factors))
    noise_loadings /= np.linalg.norm(noise_loadings, axis=1, keepdims=True)
    n_basis = min(300, n_vox)
    centres3 = position[rng.choice(n_vox, n_basis, replace=False)]
    dist2 = ((position[:, None, :] - centres3[None]) ** 2).sum(-1)
    spatial_basis = np.exp(-dist2 / (2 * 4.0**2))
    spatial_basis[spatial_basis < 1e-4] = 0.0
    spatial_basis /= np.linalg.norm(spatial_basis, axis=1, keepdims=True) + 1e-12
    baseline = rng.uniform(1.0, 3.0, n_vox)

    f32 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    return Brain(
        roi=roi, position=position, prf=f32(prf), prf_linear=f32(prf_linear), prf_colour=f32(prf_colour), retino_idx=retino_idx, higher_idx=higher_idx,
        w_energy=f32(w_energy), w_linear=f32(w_linear), exponent=f32(exponent), pool=f32(pool),
        pair_idx=pair_idx, w_higher=f32(w_higher), reliability=reliability,
        noise_loadings=noise_loadings, spatial_basis=spatial_basis, baseline=baseline,
    )


def _shift_maps(maps: torch.Tensor, shift_deg: torch.Tensor, extent_deg: float) -> torch.Tensor:
    """Translate maps by ``shift_deg`` ``(n, 2)`` (x, y in degrees); outside is mean grey (0)."""
    n = maps.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    # grid_sample samples at (x - shift); normalised coordinates span [-1, 1] over the extent
    theta[:, :, 2] = -shift_deg / (extent_deg / 2)
    grid = torch.nn.functional.affine_grid(theta, list(maps.shape), align_corners=False)
    return torch.nn.functional.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _drives(brain: Brain, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contrast drive and linear (luminance/colour) drive of retinotopic voxels, and
    the pooled descriptors of higher ROIs, for maps ``(n, C, M, M)``."""
    n = maps.shape[0]
    flat = maps.reshape(n, N_CHANNELS, -1)
    proj = torch.einsum("ncp,vp->nvc", flat[:, :N_ENERGY], brain.prf)  # (n, n_retino, N_ENERGY)
    energy = torch.einsum("nvc,vc->nv", proj, brain.w_energy).clamp_min(0)
    contrast = energy.pow(brain.exponent[None])
    proj_lum = flat[:, CH_LUM] @ brain.prf_linear.T  # (n, n_retino)
    proj_col = torch.einsum("ncp,vp->nvc", flat[:, CH_RG:CH_BY + 1], brain.prf_colour)
    linear = proj_lum * brain.w_linear[:, 0] + torch.einsum("nvc,vc->nv", proj_col, brain.w_linear[:, 1:])
    # higher ROIs see energy and saturation only (no signed luminance or hue), non-linearly
    nonneg = torch.cat([flat[:, :N_ENERGY], flat[:, CH_SAT:CH_SAT + 1]], dim=1)
    pooled = torch.einsum("ncp,wp->nwc", nonneg, brain.pool).reshape(n, -1)  # (n, n_win*(N_ENERGY+1))
    log_pooled = torch.log(pooled.abs() + 0.02)
    pairs = pooled[:, brain.pair_idx[:, 0]] * pooled[:, brain.pair_idx[:, 1]]
    en = maps[:, :N_ENERGY].reshape(n, N_ENERGY, -1)
    variability = en.std(dim=2) / (en.mean(dim=2) + 1e-3)
    desc = torch.cat([pooled, log_pooled, pairs, variability], dim=1)
    return contrast, linear, desc


def _signal(brain: Brain, maps: torch.Tensor) -> np.ndarray:
    """Noise-free voxel signal, standardised with the calibration statistics, ``(n, n_vox)``."""
    contrast, linear, desc = _drives(brain, maps)
    out = torch.zeros(maps.shape[0], brain.n_voxels)
    out[:, brain.retino_idx] = contrast + linear  # w_linear already scaled by calibrate()
    z = (desc - brain.desc_mean) / brain.desc_std
    drive = z @ brain.w_higher.T / np.sqrt(brain.w_higher.shape[1] * 0.3)
    out[:, brain.higher_idx] = torch.nn.functional.softplus(drive - 0.5)
    sig = out.numpy().astype(np.float64)
    return (sig - brain.sig_mean) / brain.sig_std


def calibrate(brain: Brain, cfg: SimulationConfig, maps: torch.Tensor) -> None:
    """Fix the luminance/colour weights and the signal statistics on a stimulus set.

    The linear term of each retinotopic voxel is scaled so that its variance across
    the images is ``luminance_share`` (luminance) and ``colour_share`` (colour) times the
    variance of the contrast term. Noise SD then follows from the target reliability r:
    noise variance = (1 - r) / r for a signal of unit variance.
    """
    contrast, _, desc = _drives(brain, maps)
    flat = maps.reshape(maps.shape[0], N_CHANNELS, -1)
    proj_lum = flat[:, CH_LUM] @ brain.prf_linear.T
    proj_col = torch.einsum("ncp,vp->nvc", flat[:, CH_RG:CH_BY + 1], brain.prf_colour)
    var_c = contrast.var(dim=0) + 1e-12
    var_lum = (proj_lum * brain.w_linear[:, 0]).var(dim=0) + 1e-12
    var_col_raw = (proj_col * brain.w_linear[:, 1:]).sum(-1).var(dim=0)
    var_col = var_col_raw + 1e-12
    brain.w_linear[:, 0] *= torch.sqrt(cfg.luminance_share * var_c / var_lum)
    # grey training stimuli (the strokes and shapes presets) carry no colour: colour then drives nothing,
    # rather than through a weight scaled up by 1e12 (which colourful test images would set off)
    colour_scale = torch.where(var_col_raw > 0, torch.sqrt(cfg.colour_share * var_c / var_col), 0.0)
    brain.w_linear[:, 1:] *= colour_scale[:, None]
    brain.desc_mean = desc.mean(dim=0)
    brain.desc_std = desc.std(dim=0) + 1e-6
    brain.sig_mean = np.zeros(brain.n_voxels)
    brain.sig_std = np.ones(brain.n_voxels)
    raw = _signal(brain, maps)
    brain.sig_mean = raw.mean(axis=0)
    brain.sig_std = raw.std(axis=0) + 1e-9
    r = brain.reliability
    brain.noise_sd = np.sqrt((1 - r) / r)


def trial_responses(
    brain: Brain, cfg: SimulationConfig, maps: torch.Tensor, rng: np.random.Generator, batch: int = 256
) -> np.ndarray:
    """Single-trial responses ``(n_trials, n_vox)`` float32 for one channel map per trial."""
    out = np.empty((maps.shape[0], brain.n_voxels), dtype=np.float32)
    share_shared, share_spatial = cfg.noise_shared, cfg.noise_spatial
    share_indep = max(0.0, 1.0 - share_shared - share_spatial)
    for start in range(0, maps.shape[0], batch):
        m = maps[start:start + batch]
        n = m.shape[0]
        jitter = torch.from_numpy(rng.normal(0, cfg.fixation_jitter_deg, (n, 2)).astype(np.float32))
        sig = _signal(brain, _shift_maps(m, jitter, cfg.image_extent_deg))
        gain = 1 + rng.normal(0, cfg.trial_gain_sd, (n, 1))
        shared = rng.normal(0, 1, (n, brain.noise_loadings.shape[1])) @ brain.noise_loadings.T
        spatial = rng.normal(0, 1, (n, brain.spatial_basis.shape[1])) @ brain.spatial_basis.T
        indep = rng.normal(0, 1, (n, brain.n_voxels))
        noise = brain.noise_sd * (
            np.sqrt(share_shared) * shared + np.sqrt(share_spatial) * spatial + np.sqrt(share_indep) * indep
        )
        out[start:start + n] = gain * (brain.baseline + sig) + noise
    return out
