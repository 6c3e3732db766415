"""atomic_path: a file or folder appears under its real name only when fully written."""

import errno

import pytest

from stages.core.artifacts import atomic_path
from stages.core.errors import PipelineError


def test_a_finished_write_is_renamed_onto_the_path(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.json.") and not target.exists()
        tmp.write_text("new")
    assert target.read_text() == "new" and list(target.parent.iterdir()) == [target]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(ValueError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("boom")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_folder_replaces_the_old_folder_whole(tmp_path):
    target = tmp_path / "engine"
    (target / "stale").mkdir(parents=True)
    with atomic_path(target, directory=True) as tmp:
        (tmp / "engine.onnx").write_bytes(b"x")
    assert sorted(p.name for p in target.iterdir()) == ["engine.onnx"]


def test_a_full_disk_while_writing_is_one_line_naming_the_path(tmp_path):
    target = tmp_path / "out.bin"
    full = r"^cannot write .*out\.bin: No space left on device$"
    with pytest.raises(PipelineError, match=full), atomic_path(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert list(tmp_path.iterdir()) == []


def test_an_error_about_another_file_is_not_blamed_on_the_output(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.bin"):
        raise FileNotFoundError(errno.EACCES, "Permission denied", "/elsewhere/input.onnx")
