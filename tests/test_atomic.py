"""The one atomic writer: a file is replaced whole or not at all, and a failed write leaves nothing behind."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from fewshot_bench.atomic import replacing, write_text
from fewshot_bench.errors import DataError, WriteError


def test_a_file_is_written_and_replaced_whole(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_text(path, "first", "test file")
    write_text(path, "second", "test file")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]


def test_the_file_gets_the_permissions_open_would_give(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_text(tmp_path / "f", "x", "test file")
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o666 & ~umask


def test_an_error_while_writing_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")
    with pytest.raises(WriteError, match=rf"cannot write test file {path}: the disk is full"):
        with replacing(path, "test file") as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_harness_error_in_the_block_passes_through(tmp_path):
    with pytest.raises(DataError, match="bad rows"):
        with replacing(tmp_path / "f", "test file"):
            raise DataError("bad rows")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_leaves_no_temporary(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with replacing(tmp_path / "f", "test file") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_directory_as_the_path_is_one_line(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(WriteError, match="it is a directory"):
        write_text(tmp_path / "d", "x", "test file")


def test_a_file_as_the_folder_is_one_line(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(WriteError, match="is a file, not a folder"):
        write_text(tmp_path / "f" / "g", "x", "test file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_place_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="Permission denied; write it to a writable place"):
            write_text(folder / "f", "x", "test file")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_another_failure_of_the_writing_library_is_one_line(tmp_path):
    with pytest.raises(WriteError,
                       match="cannot write test file .*: RuntimeError: stream writer failed; write it") as info:
        with replacing(tmp_path / "f", "test file"):
            raise RuntimeError("stream writer failed\nat some C++ frame")
    assert "\n" not in str(info.value)
