"""Atomic writes: whole files only, and the mode an ordinary write would give (umask respected)."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from cml_tf import io


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_every_atomic_write_respects_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert io.current_umask() == mask
    io.write_text_atomic(str(tmp_path / "a.txt"), "x")
    io.write_json_atomic(str(tmp_path / "b.json"), {"a": np.int64(1)})
    io.save_npy_atomic(str(tmp_path / "c.npy"), np.arange(3))
    io.save_npz_atomic(str(tmp_path / "d.npz"), x=np.arange(3))
    for name in ("a.txt", "b.json", "c.npy", "d.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.json", "c.npy", "d.npz"]  # no temporary file left


def test_a_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="not JSON serialisable"):
        io.write_json_atomic(str(tmp_path / "b.json"), {"a": object()})
    assert os.listdir(tmp_path) == []
