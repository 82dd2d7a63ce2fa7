"""Writing all or nothing, and knowing which folders are devise's.

Every file devise writes goes through `write_with` (or `write_file`): a temporary file beside it,
flushed to the disk, then renamed over it, so that a reader sees the old file or the new one and
never half of one. A folder written as one thing (an exported model, a zero-shot result) is built
beside its target and swapped in whole by `whole_folder`. When a write fails for want of space, a
read-only or vanished folder or a permission, the temporary file is removed, what was there stays
as it was, and the failure is one line (`RunFailed`) naming the path and what was not written.

A folder is devise's only if its marker (`.devise`, a file only devise writes) says so; a folder
devise writes whole (`whole_folder`) refuses to replace one that is not.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import BinaryIO

from devise.errors import DeviseError, RunFailed
from devise.version import __version__

MARKER, LOCK = ".devise", ".devise-lock"
REASONS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied", errno.ENOENT: "its folder no longer exists"}
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{6}\.(tmp|old)$")


def not_written(path: str | Path, what: str, error: OSError) -> RunFailed:
    """The one line for a write the system refused: the path, what was not written, and why."""
    reason = REASONS.get(error.errno, error.strerror or str(error))
    kept = "" if error.errno == errno.ENOENT else "; what was there before is unchanged"
    return RunFailed(f"{what} was not written to {path}: {reason}{kept}")


def describe(error: OSError) -> str:
    """Any other refusal by the system, as one line."""
    reason = REASONS.get(error.errno, error.strerror or str(error))
    return f"{error.filename}: {reason}" if error.filename else reason


def temporary_name(path: Path, kind: str = "tmp") -> Path:
    """A name beside `path` that nobody else uses, and that says which process made it."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.{kind}")


def place(source: Path, target: Path) -> None:
    """Put a finished temporary file or folder in place of `target`: the one step at which a
    reader goes from the old to the new."""
    if source.is_dir() and target.is_dir():
        swap_folders(source, target)
    else:
        os.replace(source, target)
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (where the system allows opening a folder)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def write_with(path: str | Path, write: Callable[[BinaryIO], object], *, what: str) -> Path:
    """Write `path` all or nothing: `write` fills an open temporary file beside it, which is flushed
    to the disk and renamed over `path`. On any failure the temporary file is removed and `path`
    is as it was; the system's refusal (no space, read-only, gone) is one line."""

    def fill(tmp: Path) -> None:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            recording = RecordingFile(handle)
            try:
                write(recording)
            except Exception:
                if recording.error is not None:  # torch.save, for one, turns it into a RuntimeError
                    raise recording.error from None
                raise
            handle.flush()
            os.fsync(handle.fileno())

    return replace_with(path, fill, what=what)


def write_through(path: str | Path, write: Callable[[Path], object], *, what: str) -> Path:
    """As `write_with`, for a writer that takes a path (a temporary one beside `path`) rather than an
    open file."""

    def fill(tmp: Path) -> None:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())

    return replace_with(path, fill, what=what)


def replace_with(path: str | Path, fill: Callable[[Path], None], *, what: str) -> Path:
    """`fill` writes and syncs a temporary file beside `path`, which then replaces `path`; the
    temporary file never outlives the call, and the system's refusal is one line."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        fill(tmp)
        place(tmp, path)
    except OSError as error:
        raise not_written(path, what, error) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def write_file(path: str | Path, data: bytes | str, *, what: str) -> Path:
    """Write bytes, or text as UTF-8, to `path` all or nothing (`write_with`)."""
    content = data.encode("utf-8") if isinstance(data, str) else data
    return write_with(path, lambda handle: handle.write(content), what=what)


class RecordingFile:
    """A file whose writes keep the system's error, for writers that replace it with their own."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def make_folder(folder: str | Path, *, what: str) -> Path:
    """`mkdir -p`, with the system's refusal as one line."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DeviseError(f"{folder} is a file, not a folder: give a folder of its own")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise not_written(folder, what, error) from None
    return folder


# ---------------------------------------------------------------------------------------------
# Whole folders


@contextlib.contextmanager
def whole_folder(target: str | Path, *, kind: str, what: str, names: Collection[str],
                 legacy: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Build the folder `target` in a temporary folder beside it (the block writes into the folder
    it is given) and swap it in whole when the block ends: a reader sees the old folder or the new
    one, never a mix, and a failure leaves the old one as it was. Only a folder devise wrote
    (`claim`) is replaced."""
    target = Path(target)
    claim(target, kind=kind, names=names, legacy=legacy)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        recover(target)
        building = temporary_name(target)
        os.mkdir(building)
    except OSError as error:
        raise not_written(target, what, error) from None
    try:
        write_marker(building, kind)
        yield building
        place(building, target)
    except OSError as error:
        raise not_written(target, what, error) from None
    except RunFailed as error:  # a file of the new folder: named where the user will look for it
        raise RunFailed(str(error).replace(str(building), str(target))) from None
    finally:
        shutil.rmtree(building, ignore_errors=True)  # the new folder unused, or the old one swapped out


def claim(folder: Path, *, kind: str, names: Collection[str], legacy: Callable[[Path], bool] | None = None) -> None:
    """Refuse, with one line, to write `folder` unless it is missing, empty, or devise's: its marker
    names `kind` (or `legacy` recognises one an earlier devise wrote) and it holds only `names`."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DeviseError(f"{folder} is a file, not a folder: give a folder of its own")
    if not folder.is_dir():
        return
    present = sorted(name for name in os.listdir(folder) if name not in (MARKER, LOCK))
    if not present:
        return
    found = marker_kind(folder)
    others = [name for name in present  # an earlier devise left NAME.tmp where it was killed
              if name not in names and name.removesuffix(".tmp") not in names and not LEFTOVER.match(name)]
    if found not in (kind, None) and not others:
        raise DeviseError(f"{folder} is a devise {found} folder, not a {kind} one: choose another folder")
    if others or not (found == kind or (found is None and legacy is not None and legacy(folder))):
        shown = others or present
        raise DeviseError(f"{folder} holds files devise did not write ({', '.join(shown[:3])}"
                          f"{', ...' if len(shown) > 3 else ''}): choose another folder")


def marker_kind(folder: Path) -> str | None:
    """What devise's marker in `folder` says the folder is ("run", "model", ...), or None."""
    try:
        content = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return content.get("devise") if isinstance(content, dict) and isinstance(content.get("devise"), str) else None


def write_marker(folder: Path, kind: str) -> None:
    """Mark `folder` as devise's own `kind` of folder."""
    write_file(Path(folder) / MARKER, json.dumps({"devise": kind, "version": __version__}) + "\n",
               what="devise's marker")


def swap_folders(new: Path, target: Path) -> None:
    """Exchange two folders in one step where the system can (Linux's renameat2); elsewhere the
    old folder is renamed aside first, and `recover` puts it back if nothing took its place."""
    if exchange(new, target):
        return
    aside = temporary_name(target, "old")
    os.rename(target, aside)
    os.rename(new, target)
    os.rename(aside, new)  # removed with the temporary folder


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where it is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def recover(target: Path) -> None:
    """Before writing `target` again: put back an old folder that an interrupted swap left aside,
    and remove the temporary files and folders of writers that are no longer running."""
    for leftover in sorted(target.parent.glob(f".{glob_escape(target.name)}.*")):
        match = LEFTOVER.match(leftover.name)
        if not match or match["name"] != target.name or alive(int(match["pid"])):
            continue
        if leftover.name.endswith(".old") and not target.exists():
            os.rename(leftover, target)
        elif leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def remove_leftovers(folder: Path, names: Collection[str]) -> None:
    """Remove the temporary files that writers no longer running left in `folder` for `names`."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            match = LEFTOVER.match(name)
            if match and match["name"] in names and not alive(int(match["pid"])) and (folder / name).is_file():
                (folder / name).unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether a process of this id is running (on this machine)."""
    if pid == os.getpid():
        return False  # this process is writing nothing else to the same place
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
