"""Feature network: torchvision VGG19 / AlexNet, canonical layer names, batched extraction.

``FeatureNet(network, weights)`` wraps the torchvision model, runs it only as far as
the deepest requested layer, and returns activations keyed by canonical layer name
(``conv1_1 ... fc8`` for VGG19, ``conv1 ... fc8`` for AlexNet).

Weights are never downloaded: ``imagenet`` reads torchvision's file from the local
torch cache (or fails with the exact path to put it at), a ``.pth`` path is loaded as
a state dict, and ``random:<seed>`` builds seeded untrained weights for offline tests (drawn
once, then read from ``random_weights_cache()``).
"""

from __future__ import annotations

import logging
import os
import pickle
import platform
import tempfile
from pathlib import Path

import torch
import torchvision
from torch import nn

from shared.checkpoints import needs_unpickling
from shared.errors import UserError
from shared.layers import LAYERS, layer_order, pixels_side
from shared.weights import WeightsSpec, parse_weights

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BUILDERS = {
    "vgg19": (torchvision.models.vgg19, torchvision.models.VGG19_Weights.IMAGENET1K_V1),
    "alexnet": (torchvision.models.alexnet, torchvision.models.AlexNet_Weights.IMAGENET1K_V1),
}


def imagenet_weights_path(network: str) -> tuple[Path, str]:
    """Where torchvision's cache keeps the ImageNet file of ``network``, and its URL."""
    url = _BUILDERS[network][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name, url


def check_weights(network: str, weights: str) -> None:
    """Raise the same ``UserError`` as ``build_model`` would if the weights file is missing or is not
    a state dict of ``network`` (the file is loaded, once per process: a damaged one fails here, before a
    run starts; its digest is kept for ``weights_digest``)."""
    if parse_weights(weights).kind != "random":
        weights_digest(network, weights)


_DIGESTS: dict[tuple, str] = {}


def weights_digest(network: str, weights: str) -> str:
    """SHA-256 (16 hex digits) of the network's weights as loaded: every tensor's name, shape, dtype and
    bytes. Two spellings of the same weights (``imagenet`` and the cached file, a copied ``.pth``) give
    one digest; a ``random:<seed>`` spec is hashed as generated. Memoised per process (a file by its
    resolved path, size and modification time)."""
    import hashlib

    spec = parse_weights(weights)
    key: tuple = (network, weights)
    if spec.kind != "random":
        path = spec.path if spec.kind == "file" else imagenet_weights_path(network)[0]
        st = path.stat() if path.is_file() else None
        key = (network, str(path.resolve()), st and st.st_size, st and st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for name, t in _load_model(network, spec).state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name} {tuple(t.shape)} {t.dtype}".encode())
            h.update(t.numpy().tobytes())
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


def build_model(network: str, weights: str | WeightsSpec) -> nn.Module:
    """The torchvision model with the requested weights, in eval mode, on the CPU.

    Its ReLUs are made out-of-place: torchvision's in-place ReLUs would overwrite the
    pre-activation outputs that ``FeatureNet`` hands out.
    """
    model = _load_model(network, weights)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


def _load_model(network: str, weights: str | WeightsSpec) -> nn.Module:
    spec = parse_weights(weights) if isinstance(weights, str) else weights
    if spec.kind == "random":
        return _random_model(network, spec.seed).eval()
    if spec.kind == "imagenet":
        path, url = imagenet_weights_path(network)
        if not path.is_file():
            raise UserError(
                f"ImageNet weights for {network} not found at {path}; download {url} on a machine with "
                f"internet and put the file there (or set the weights to a .pth path)"
            )
    else:
        path = spec.path
        if not path.is_file():
            raise UserError(f"weights file {path} for {network} does not exist; give an existing .pth state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = _with_state(network, state)
    except pickle.UnpicklingError as exc:
        if needs_unpickling(exc):  # would need general unpickling, which can run code
            raise UserError(f"weights file {path} holds objects beyond tensors and plain data, which loading would "
                            f"have to unpickle (that can run any code); this tool does not load it: save the "
                            f"network's state dict alone (torch.save(model.state_dict(), path))") from None
        raise UserError(f"weights file {path} is not a {network} state dict (it cannot be unpickled); replace it "
                        f"with the network's .pth state dict") from None
    except (RuntimeError, KeyError, ValueError, OSError, EOFError, AttributeError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"weights file {path} is not a {network} state dict ({first}); replace it with the "
                        f"network's .pth state dict") from None
    return model.eval()


def _with_state(network: str, state: dict) -> nn.Module:
    """The network holding ``state``'s tensors, built without drawing initial weights first (on the meta
    device: drawing VGG19's 143 M random values costs seconds that loading then overwrites)."""
    with torch.device("meta"):
        model = _BUILDERS[network][0](weights=None)
    model.load_state_dict(state, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"no tensor for {left[0]}")
    return model.float()  # assigned tensors keep the file's dtype (a float16 .pth): the network computes in float32


def random_weights_cache() -> Path | None:
    """Where seeded random weights are kept once drawn (``N2P_WEIGHTS_CACHE``; ``off`` keeps none): by default
    beside torchvision's ImageNet files in the torch cache."""
    where = os.environ.get("N2P_WEIGHTS_CACHE", "")
    if where.lower() == "off":
        return None
    return Path(where) if where else Path(torch.hub.get_dir()) / "checkpoints" / "random-weights"


def _random_model(network: str, seed: int) -> nn.Module:
    """``network`` with the untrained weights torchvision draws after ``torch.manual_seed(seed)``. Drawn once per
    torch release and machine type and kept in ``random_weights_cache()``: VGG19 takes about 3 s to draw and
    0.5 s to read. A cached file that cannot be read is drawn again."""
    cache = random_weights_cache()
    path = None if cache is None else cache / (f"{network}-random{seed}-torch{torch.__version__}-"
                                                 f"torchvision{torchvision.__version__}-{platform.machine()}.pt")
    if path is not None and path.is_file():
        try:
            return _with_state(network, torch.load(path, map_location="cpu", weights_only=True))
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, KeyError, ValueError, AttributeError,
                TypeError) as exc:  # a damaged or foreign file: drawn again below, and replaced
            log.warning("cached random weights %s unreadable (%s); drawing them again", path,
                        (str(exc).splitlines() or [type(exc).__name__])[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _BUILDERS[network][0](weights=None)
    if path is not None:
        _keep(model.state_dict(), path)
    return model


def _keep(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a reader sees all of it or nothing); a cache that cannot be written
    (read-only, full, interrupted) is skipped with a debug line: the weights were drawn, the next run draws them
    again."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        torch.save(state, tmp)  # torch reports a failed write as RuntimeError
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        log.debug("random weights not cached at %s: %s", path, exc)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # gone after the replace; a partial file otherwise


def pixels_of(images: torch.Tensor, side: int, channels: int = 3) -> torch.Tensor:
    """A ``pixels<side>`` layer of ``(B, 3, H, W)`` images in [0, 1]: area-averaged to ``side`` (bilinear if
    larger, as ``evaluation.at_size`` resamples), the channels' mean when ``channels`` is 1."""
    x = images
    if x.shape[-1] != side or x.shape[-2] != side:
        mode = {"mode": "area"} if side < x.shape[-1] else {"mode": "bilinear", "align_corners": False}
        x = nn.functional.interpolate(x, size=(side, side), **mode)
    return x.mean(dim=1, keepdim=True) if channels == 1 else x


class FeatureNet(nn.Module):
    """Activations of named layers for a batch of images.

    ``forward(images)`` takes ``(batch, 3, H, W)`` RGB in [0, 1] (any H, W; resized to
    ``input_size``) and returns ``{layer: (batch, *unit_shape)}``.
    """

    def __init__(self, network: str, weights: str | WeightsSpec, layers: list[str], input_size: int = 224,
                 pixel_channels: int = 3):
        super().__init__()
        self.network = network
        self.spec = parse_weights(weights) if isinstance(weights, str) else weights
        self.layers = layer_order(network, list(layers))
        self.input_size = input_size
        # pixels<N> layers: the input images area-averaged to N (one channel, their mean, for a grayscale set)
        self.pixels = {name: pixels_side(name) for name in self.layers if pixels_side(name) is not None}
        self.pixel_channels = pixel_channels
        self.model = build_model(network, self.spec)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        table = LAYERS[network]
        self._targets = {table[name]: name for name in self.layers if name not in self.pixels}
        self._needs_classifier = any(part == "classifier" for part, _ in self._targets)
        last_feat = [idx for (part, idx) in self._targets if part == "features"]
        self._last_feature = len(self.model.features) - 1 if self._needs_classifier else max(last_feat, default=-1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        assert images.ndim == 4 and images.shape[1] == 3, f"expected (B, 3, H, W), got {tuple(images.shape)}"
        x = images
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                          align_corners=False, antialias=True)
        out: dict[str, torch.Tensor] = {name: pixels_of(x, side, self.pixel_channels)
                                        for name, side in self.pixels.items()}
        x = (x - self.mean) / self.std
        for i, module in enumerate(self.model.features):
            if i > self._last_feature:
                break
            x = module(x)
            if ("features", i) in self._targets:
                out[self._targets[("features", i)]] = x
            if i >= self._last_feature:
                break
        if self._needs_classifier:
            x = torch.flatten(self.model.avgpool(x), 1)
            for i, module in enumerate(self.model.classifier):
                x = module(x)
                if ("classifier", i) in self._targets:
                    out[self._targets[("classifier", i)]] = x
        return out

    @torch.no_grad()
    def unit_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one image's activation per layer (without the batch axis)."""
        device = self.mean.device
        probe = torch.zeros(1, 3, self.input_size, self.input_size, device=device)
        return {k: tuple(v.shape[1:]) for k, v in self.forward(probe).items()}
