"""How a message below the commands names an option: ``--name`` under a command, ``name`` from Python.

Messages are written once, naming flags (``--num_candidates=2000 exceeds the 1,682 items``): the flags of
``python -m cml_tf.train`` are the `Config` fields. The commands call `use_flag_names` when they start; a Python
user, who sets fields (``Config(num_candidates=2000)``), reads the same message through `wording` with the field
names (``num_candidates=2000 exceeds the 1,682 items``).
"""

from __future__ import annotations

import re

_FLAG = re.compile(r"(?<![\w-])--(?=[a-z])")
_flag_names = False


def use_flag_names(on: bool = True) -> None:
    """Messages name flags (``--name``): what a command calls before anything can fail."""
    global _flag_names
    _flag_names = bool(on)


def wording(message: str) -> str:
    """``message`` for its reader: as written (``--name``) under a command, else with ``name`` for ``--name``."""
    return message if _flag_names else _FLAG.sub("", message)


class OptionError(ValueError):
    """A one-line error about an option, written naming flags (``--k=9 exceeds …``): `str` gives it in its reader's
    words (`wording`), so the same exception names ``k=9`` for a Python user and ``--k=9`` under a command."""

    def __str__(self) -> str:
        return wording(super().__str__())
