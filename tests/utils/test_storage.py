"""Crash-safe writing: atomic files, staged folders, completion markers, locks."""

import numpy as np
import pytest

from pairless.utils.storage import (
    FolderLock,
    atomic_save_npy,
    atomic_write_json,
    config_hash,
    is_complete,
    read_json,
    staged_dir,
    verify_complete,
)


def test_atomic_json_round_trip(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert not list(tmp_path.glob(".*tmp"))


def test_read_json_names_corrupt_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(tmp_path / "bad.json")


def test_object_arrays_refused(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        atomic_save_npy(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object))


def test_staged_dir_publishes_only_on_success(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(final) as staging:
            (staging / "part.txt").write_text("half")
            raise RuntimeError("killed")
    assert not final.exists() and not is_complete(final)
    assert not list(tmp_path.glob(".out.staging-*"))
    with staged_dir(final) as staging:
        (staging / "data.txt").write_text("whole")
    assert is_complete(final)
    verify_complete(final)
    (final / "data.txt").write_text("tampered")
    with pytest.raises(ValueError, match="content hash mismatch"):
        verify_complete(final)


def test_staged_dir_refuses_to_clobber_complete(tmp_path):
    with staged_dir(tmp_path / "o") as staging:
        (staging / "a").write_text("1")
    with pytest.raises(FileExistsError):
        with staged_dir(tmp_path / "o"):
            pass
    with staged_dir(tmp_path / "o", overwrite=True) as staging:
        (staging / "b").write_text("2")
    assert (tmp_path / "o" / "b").exists() and not (tmp_path / "o" / "a").exists()


def test_lock_is_exclusive(tmp_path):
    with FolderLock(tmp_path / "run"):
        with pytest.raises(RuntimeError, match="another pairless process"):
            with FolderLock(tmp_path / "run"):
                pass
    with FolderLock(tmp_path / "run"):
        pass


def test_config_hash_is_stable_and_sensitive():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_cli_reports_a_busy_output_without_a_traceback(tmp_path, capsys):
    from pairless.cli import main

    with FolderLock(tmp_path / "w"):
        code = main(["world", "--out", str(tmp_path / "w"), "--num-scenes", "8"])
    err = capsys.readouterr().err
    assert code == 1
    assert "another pairless process" in err and "Traceback" not in err


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    atomic_write_json(tmp_path / "p.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o666 & ~mask
