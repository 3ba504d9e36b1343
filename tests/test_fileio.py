"""Atomic output: the umask's mode (not mkstemp's 0600), nothing left behind, old file kept on failure."""

from __future__ import annotations

import os

import pytest

from lstc_gait.utils.fileio import atomic_output, atomic_write_bytes, atomic_write_text
from lstc_gait.utils.paths import resolve_path


@pytest.fixture
def umask():
    def set_mask(mask):
        previous.append(os.umask(mask))

    previous: list[int] = []
    yield set_mask
    if previous:
        os.umask(previous[0])


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_umask_mode(tmp_path, umask, mask, mode):
    umask(mask)
    a = atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    b = atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    with atomic_output(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"c")
    for path in (a, b, tmp_path / "c.bin"):
        assert path.stat().st_mode & 0o777 == mode, path
    assert a.read_text() == "hello" and b.read_bytes() == b"\x00\x01"


def test_replaces_whole_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_resolve_path(tmp_path):
    assert resolve_path(None) is None and resolve_path("") is None
    assert resolve_path("a/b", tmp_path) == tmp_path / "a" / "b"
    assert resolve_path(tmp_path / "abs", "/elsewhere") == tmp_path / "abs"
    assert resolve_path("~/x").is_absolute()
