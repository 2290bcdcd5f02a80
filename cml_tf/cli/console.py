"""What the commands print: cml_tf's own lines on stderr, and TensorFlow quiet unless asked.

Importing TensorFlow prints start-up lines on every machine; `import_tensorflow` (`cml_tf.import_tensorflow`, which
the Python entry points share) hides them, and ``verbose=True`` (the commands' ``-v 1`` / ``--verbosity=1``)
leaves everything as TensorFlow prints it. `setup_logging` also makes the messages of the library name flags
(``--num_candidates``) rather than `Config` fields (`cml_tf.messages`).

This module must not import TensorFlow: the commands check flags and files before they import it.
"""

from __future__ import annotations

import logging
import sys

from cml_tf import import_tensorflow  # noqa: F401 (the commands' name for it)
from cml_tf.messages import use_flag_names

#: the logger every cml_tf module logs to (``cml_tf.data.loaders`` etc. are its children)
LOGGER = "cml_tf"


def setup_logging(verbose: bool = False) -> None:
    """cml_tf's log lines as plain messages on stderr, naming flags; other libraries' Python logging only when
    ``verbose``."""
    use_flag_names()
    logger = logging.getLogger(LOGGER)
    if not any(getattr(h, "_cml_tf", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._cml_tf = True
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False  # absl puts its own (prefixed) handler on the root logger
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)  # e.g. TensorFlow's per-checkpoint and sharding INFO lines


def fail(message: str) -> None:
    """Ends a command with one line ``error: <message>`` (whitespace collapsed) on stderr and exit code 1."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(1)


def run_command(main, flag_values) -> None:
    """``absl.app.run(main)`` with a bad flag or a positional argument reported by `fail` (one line, exit code 1)
    instead of absl's usage; ``main`` is called without arguments."""
    from absl import app, flags

    def parse(argv):
        try:
            return flag_values(argv)
        except flags.Error as e:
            fail(str(e))

    def run(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; expected only --flags")
        return main()

    app.run(run, flags_parser=parse)
