"""Choose the torch device: CUDA when present, else CPU, with no code change."""

from __future__ import annotations

from shared.errors import UserError


def resolve_device(name: str = "auto"):
    """``'auto'`` -> ``cuda`` if available else ``cpu``; explicit names are checked."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"'device' is {name!r} but no CUDA device is available here; use 'auto' or 'cpu'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"'device' must be 'auto', 'cpu' or 'cuda[:N]'; {name!r} was given") from None
