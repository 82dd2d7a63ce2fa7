"""Writing all or nothing (`devise.files`): a reader finds the old file or folder or the new one,
never a mix; a full disk, a read-only folder or a folder gone is one line naming the path, with
what was there kept and no temporary file left; and no folder of the user's is replaced."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Killed, kill_at, toy_flags

from devise import files
from devise.cli import main
from devise.errors import DeviseError, RunFailed

TINY = {"image_size": 16, "width": 8, "hidden": 32}


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by its path there, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def folders(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_dir())


def leftovers(folder: Path) -> list[str]:
    """The temporary files and folders of devise's writers under `folder`."""
    return [str(path) for path in folder.rglob("*") if files.LEFTOVER.match(path.name)]


def test_a_file_is_replaced_whole_or_left_as_it_was(tmp_path):
    path = tmp_path / "result.json"
    files.write_file(path, "old", what="the result")

    def half_then_fail(handle):
        handle.write(b"half of the new")
        raise ValueError("the writer failed")

    with pytest.raises(ValueError):
        files.write_with(path, half_then_fail, what="the result")
    assert path.read_text() == "old" and leftovers(tmp_path) == []
    files.write_file(path, "new", what="the result")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["result.json"]


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "no space left on the device"),
                                              (errno.EROFS, "the file system is read-only"),
                                              (errno.EACCES, "permission denied")])
def test_a_write_the_system_refuses_is_one_line_naming_the_path_and_what_was_not_written(tmp_path, code, reason):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"the earlier checkpoint")

    def refused(handle):
        handle.write(b"part")
        raise OSError(code, os.strerror(code))

    with pytest.raises(RunFailed) as caught:
        files.write_with(path, refused, what="the checkpoint of epoch 3")
    assert str(caught.value) == (f"the checkpoint of epoch 3 was not written to {path}: {reason}; what was there "
                                 "before is unchanged")
    assert path.read_bytes() == b"the earlier checkpoint" and leftovers(tmp_path) == []


def test_a_writer_that_hides_the_systems_error_still_reports_it(tmp_path):
    """torch.save turns a failed write into a RuntimeError; the error of the file itself is what counts."""
    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def hiding(handle):
        handle.handle = Full()  # the disk fills up under the writer
        try:
            handle.write(b"data")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from None

    with pytest.raises(RunFailed, match="no space left on the device"):
        files.write_with(tmp_path / "checkpoint.pt", hiding, what="the checkpoint")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("atomic_exchange", [True, False], ids=["renameat2", "two renames"])
def test_a_folder_is_swapped_in_whole_and_killed_at_any_step_stays_old_or_new(tmp_path, monkeypatch, atomic_exchange):
    if not atomic_exchange:
        monkeypatch.setattr(files, "exchange", lambda first, second: False)
    target = tmp_path / "result"

    def write(text: str) -> None:
        with files.whole_folder(target, kind="result", what="the result", names={"a", "b"}) as building:
            files.write_file(building / "a", f"{text} a", what="a")
            files.write_file(building / "b", f"{text} b", what="b")

    write("old")
    old = contents(target)
    for n in range(1, 5):  # the marker, a, b, the folder
        with monkeypatch.context() as patch:
            kill_at(patch, n)
            with pytest.raises(Killed):
                write("new")
        assert contents(target) == old
    write("new")
    assert contents(target)["a"] == b"new a" and contents(target)["b"] == b"new b"
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["result"]


def test_an_old_folder_left_aside_by_an_interrupted_swap_is_put_back_by_the_next_write(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True,
                          text=True)
    target = tmp_path / "result"
    aside = tmp_path / f".result.{int(gone.stdout)}.abcdef.old"  # killed between its two renames
    aside.mkdir()
    (aside / "a").write_text("old a")
    files.write_marker(aside, "result")
    with pytest.raises(ValueError), files.whole_folder(target, kind="result", what="the result", names={"a"}):
        raise ValueError("this write fails too")
    assert (target / "a").read_text() == "old a" and leftovers(tmp_path) == []


def test_a_folder_devise_did_not_write_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a").write_text("the user's own a")
    with (pytest.raises(DeviseError, match=r"^.*mine holds files devise did not write \(a\): choose another folder$"),
          files.whole_folder(mine, kind="result", what="the result", names={"a"})):
        raise AssertionError("never reached")
    (tmp_path / "file").write_text("a file")
    with pytest.raises(DeviseError, match="file is a file, not a folder"):
        files.claim(tmp_path / "file", kind="result", names={"a"})
    files.write_marker(mine, "model")
    with pytest.raises(DeviseError, match="is a devise model folder, not a result one"):
        files.claim(mine, kind="result", names={"a"})
    assert (mine / "a").read_text() == "the user's own a"
    files.claim(mine, kind="model", names={"a"})  # its own kind: devise's
    (mine / ".devise").unlink()
    files.claim(mine, kind="result", names={"a"}, legacy=lambda folder: True)  # written before the marker


# ---------------------------------------------------------------------------------------------
# Every command on a full disk, in a read-only folder, and with its folder gone


def run_command(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def fill(disk: Path, leave: int) -> None:
    """Fill the disk up to `leave` bytes."""
    with open(disk / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(bytes(4096))
    with open(disk / "filler", "r+b") as handle:
        handle.truncate(max(0, (disk / "filler").stat().st_size - leave))


def test_on_a_full_disk_each_command_is_one_line_keeps_what_was_there_and_leaves_no_temporary_file(
        toy_runs, small_disk, capsys):
    run = shutil.copytree(toy_runs["devise"], small_disk / "run")
    assert main(["export", str(run), "--out", str(small_disk / "model")]) == 0
    assert main(["report", str(run), "--out", str(small_disk / "report.html")]) == 0
    fill(small_disk, leave=12 * 1024)
    for argv in (["train", "--resume", "--out", run, "--epochs", "3", "--quiet"],
                 ["export", run, "--out", small_disk / "model"],
                 ["zeroshot", run, "--target", "toy", "--out", small_disk / "zs", "--example-images", "0", "--quiet"],
                 ["report", run, "--out", small_disk / "report.html"],
                 ["train", *toy_flags(**TINY, epochs=1), "--out", small_disk / "new", "--quiet"]):
        before, folders_before = contents(small_disk), folders(small_disk)
        code, err = run_command(argv, capsys)
        assert (code, err.count("\n")) == (1, 1), (argv[0], err)
        assert err.startswith("devise: error: ") and " was not written to " in err and "no space left" in err, err
        after = contents(small_disk)
        if argv[0] == "train":  # a resume's settings, or a new run's, are written before its first epoch
            after = {name: data for name, data in after.items() if not name.startswith("new/")}
            after["run/config.toml"] = before["run/config.toml"]
        assert after == before, argv[0]
        assert [name for name in folders(small_disk) if not name.startswith("new")] == folders_before, argv[0]
        assert leftovers(small_disk) == [], argv[0]


def test_in_a_read_only_folder_each_command_is_one_line_and_changes_nothing(toy_runs, tmp_path, read_only, capsys):
    shelf = tmp_path / "shelf"
    run = shutil.copytree(toy_runs["devise"], shelf / "run")
    assert main(["export", str(run), "--out", str(shelf / "model")]) == 0
    assert main(["report", str(run), "--out", str(shelf / "report.html")]) == 0
    before = contents(read_only(shelf))
    for argv in (["train", "--resume", "--out", run, "--epochs", "3", "--quiet"],
                 ["train", *toy_flags(**TINY, epochs=1), "--out", shelf / "new", "--quiet"],
                 ["evaluate", run, "--quiet"],
                 ["zeroshot", run, "--target", "toy", "--example-images", "0", "--quiet"],
                 ["export", run, "--out", shelf / "model"],
                 ["report", run, "--out", shelf / "report.html"]):
        code, err = run_command(argv, capsys)
        assert (code, err.count("\n")) == (1, 1), (argv[0], err)
        assert "read-only" in err or "permission denied" in err, err
        assert str(shelf) in err, err
    assert contents(shelf) == before


def test_a_run_folder_removed_during_training_is_one_line(tmp_path, monkeypatch, capsys):
    import devise.training.loop as training

    out = tmp_path / "run"
    first_epoch = training.train_one_epoch

    def then_removed(*args, **kwargs):
        figures = first_epoch(*args, **kwargs)
        shutil.rmtree(out)
        return figures

    monkeypatch.setattr(training, "train_one_epoch", then_removed)
    code, err = run_command(["train", *toy_flags(**TINY, epochs=1), "--out", out, "--quiet"], capsys)
    assert (code, err.count("\n")) == (1, 1), err
    assert f"was not written to {out}" in err and "its folder no longer exists" in err
