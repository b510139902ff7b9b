"""Shared library of the two stages: configs, data, features, store, metrics, runs.

Both ``stage1_decode`` and ``stage2_generate`` import from here; neither imports
the other. Modules that need torch import it lazily so that ``--help`` and config
validation stay fast.
"""

from shared.errors import UserError

__all__ = ["UserError"]
