"""The exceptions a user can cause, each ending as one line on stderr and a non-zero exit.

The command-line tool turns a `DeviseError` into a single line and exit status 2 (the input is
wrong: a missing file, an unknown name, a bad image, a setting out of range), and a `RunFailed`
into a single line and exit status 1 (the input was fine but the work could not go on: training
diverged, the run folder is in use). Anything else is a bug in devise and keeps its traceback.
"""

from pathlib import Path


class DeviseError(Exception):
    """A problem with the user's input: a missing file, an unknown name, a bad image."""

    exit_code = 2


class RunFailed(DeviseError):
    """The work started and could not go on; what was written before stays as it was."""

    exit_code = 1


def read_text_file(path, what: str = "file") -> str:
    """A UTF-8 text file's contents, or one line saying why it cannot be read."""
    path = Path(path).expanduser()
    data = read_file_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DeviseError(f"{path} is not UTF-8 text") from None


def read_file_bytes(path, what: str = "file", *, limit: int | None = None) -> bytes:
    """A file's bytes (one larger than `limit` refused from its size, unread), or one line saying
    why it cannot be read."""
    path = Path(path).expanduser()
    try:
        if limit is not None and (size := path.stat().st_size) > limit:
            raise DeviseError(f"{path} is {size:,} bytes, more than a {what} may be ({limit:,})")
        return path.read_bytes()
    except FileNotFoundError:
        raise DeviseError(f"{path}: no such {what}") from None
    except OSError as error:
        raise DeviseError(f"cannot read {path}: {error.strerror or error}") from None
