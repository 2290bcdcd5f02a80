"""Atomic file writes shared by every module that writes results.

Each write goes to a temporary file in the target's directory, then ``os.replace``: readers never see half a file.
``tempfile.mkstemp`` creates its file with mode 0600; the finished file gets the mode an ordinary ``open`` would
give it (0666 less the process umask), so a shared run directory stays readable to its group and others.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


def _tmp_in(path: str):
    """(fd, name) of a new temporary file beside ``path``, with the mode ``open(path, "w")`` would give."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def write_text_atomic(path: str, text: str) -> None:
    """Writes text to ``path`` via a temporary file and ``os.replace``: readers never see half a file."""
    fd, tmp = _tmp_in(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def save_npz_atomic(path: str, **arrays) -> None:
    """``np.savez`` of ``arrays`` written atomically (no pickle)."""
    fd, tmp = _tmp_in(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npy_atomic(path: str, array: np.ndarray) -> None:
    fd, tmp = _tmp_in(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
