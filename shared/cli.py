"""Common command-line plumbing of both stages.

``main(prog, description, verbs, argv)`` parses ``<verb> --config FILE [--set key=value ...]
[--dry-run]``, loads and validates the config, and calls the verb. A verb given as
``(function, help, add_arguments[, option_help])`` adds its own options and receives the parsed
arguments instead (``compare`` and ``export`` read other kinds of files); ``option_help`` says
what its ``--config`` and ``--dry-run`` mean (``{"config": ..., "dry_run": ...}``). A ``UserError``
becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from shared.errors import UserError

Verb = Callable[["object"], None]


class Lazy:
    """A verb's function (or its ``add_arguments``) named as ``"package.module:function"`` and imported only when
    called: a process imports the modules of the verb it runs, not every verb's (torch, torchvision and
    scikit-learn take seconds to import, which a refused config or ``plan`` need not pay)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __call__(self, *args):
        import importlib

        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)(*args)


def _parser(prog: str, description: str, verbs: dict[str, tuple[Verb, str]],
            argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    given = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in given if not a.startswith("-")), None)  # only its own options need importing
    for name, (_, help_text, *extra) in verbs.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        option_help = extra[1] if len(extra) > 1 else {}
        p.add_argument("--config", required=option_help.get("config_required", True),
                       help=option_help.get("config", "experiment YAML file, e.g. configs/demo.yaml"))
        if extra and name == chosen:  # a verb with its own options; it reads its config itself
            extra[0](p)
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set data.rois=[VC] (repeatable)")
        p.add_argument("--dry-run", action="store_true",
                       help=option_help.get("dry_run", "print the resolved config and exit"))
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(prog: str, description: str, verbs: dict[str, tuple[Verb, str]], argv: list[str] | None = None) -> int:
    args = _parser(prog, description, verbs, argv).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from shared.config import dump_yaml, load_config

        if len(verbs[args.verb]) > 2:  # (function, help, add_arguments): it gets the parsed arguments
            verbs[args.verb][0](args)
            return 0
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            sys.stdout.write(dump_yaml(cfg))
            return 0
        verbs[args.verb][0](cfg)
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished steps are kept and a rerun resumes from them\n")
        return 130
    except OSError as exc:  # a full disk while writing an HDF5 array or a checkpoint
        from shared.runs import is_disk_full

        if not is_disk_full(exc):
            raise
        sys.stderr.write(f"error: no space left on the device ({getattr(exc, 'filename', None) or exc}); files "
                         f"being written were discarded and finished ones are intact: free space and rerun, "
                         f"which resumes\n")
        return 2
    except MemoryError:
        sys.stderr.write("error: out of memory; lower decoder.chunk_units or features.batch_size\n")
        return 2
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if "out of memory" not in str(exc):
            raise
        sys.stderr.write("error: the GPU ran out of memory; lower generator.batch_size, features.batch_size or "
                         "decoder.chunk_units, or set device=cpu\n")
        return 2
    return 0


def run_module(prog: str, description: str, verbs: dict[str, tuple[Verb, str]]) -> None:
    sys.exit(main(prog, description, verbs))
