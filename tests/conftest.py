"""Shared fixtures: where the real data lives, CPU-only TensorFlow, quiet logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.abspath(os.path.join(ROOT, "..", "shared", "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data; tests that need it skip with a clear reason where it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real data not found at {SHARED_DATA} (expected ../shared/data beside the project root)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def restore_logging():
    """Commands called in-process (e.g. ``hlr_table.cli``) set up cml_tf's logging for a terminal: its own stderr
    handler and no propagation, which would hide later tests' log lines from ``caplog``. Undo it after each test."""
    import logging

    names = ("cml_tf", "tensorflow", "absl", "keras")
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names
    }
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def python_wording():
    """A command called in-process switches messages to flag names (`cml_tf.messages.use_flag_names`); each test
    starts as a Python user, with field names."""
    from cml_tf.messages import use_flag_names

    use_flag_names(False)
    yield
    use_flag_names(False)
