"""Weight specifications of the feature network: ``imagenet``, a file, or ``random:<seed>``.

Torch-free parsing so configs validate without importing torch; loading lives in
``shared.featnet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.errors import UserError


@dataclass(frozen=True)
class WeightsSpec:
    kind: str  # 'imagenet' | 'file' | 'random'
    path: Path | None = None
    seed: int | None = None

    @property
    def label(self) -> str:
        """Short text for every output that used these weights."""
        if self.kind == "random":
            return f"random:{self.seed} (untrained, for offline tests and demos only)"
        if self.kind == "file":
            return f"file:{self.path}"
        return "imagenet (torchvision IMAGENET1K_V1)"

    @property
    def slug(self) -> str:
        """Filesystem-safe tag used in feature-store paths."""
        if self.kind == "random":
            return f"random{self.seed}"
        if self.kind == "file":
            return "file-" + self.path.stem.replace(" ", "_")
        return "imagenet"


def parse_weights(text: str, key: str = "features.weights") -> WeightsSpec:
    """Parse a weights string; raise ``UserError`` naming ``key`` if malformed."""
    text = text.strip()
    if text == "imagenet":
        return WeightsSpec("imagenet")
    if text.startswith("random:"):
        seed = text.split(":", 1)[1]
        if not seed.isdigit():
            raise UserError(f"'{key}' must be 'random:<integer seed>'; {text!r} was given")
        return WeightsSpec("random", seed=int(seed))
    if text.endswith((".pth", ".pt")):
        return WeightsSpec("file", path=Path(text))
    raise UserError(f"'{key}' must be 'imagenet', a .pth/.pt file path, or 'random:<seed>'; {text!r} was given")
