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


def distributed(device) -> tuple[int, int]:
    """``(rank, world size)``: under ``torchrun`` (WORLD_SIZE > 1) the process group is
    initialised once (NCCL on CUDA, gloo on CPU); otherwise ``(0, 1)``."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def process_device(name: str = "auto"):
    """``resolve_device``, but one GPU per process under ``torchrun`` (cuda:LOCAL_RANK)."""
    import os

    import torch

    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device
