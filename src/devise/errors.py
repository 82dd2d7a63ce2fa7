"""One exception type for every mistake a user can make.

The command-line tool turns a `DeviseError` into a single line on stderr and a non-zero exit;
anything else is a bug in devise and keeps its traceback.
"""


class DeviseError(Exception):
    """A problem with the user's input: a missing file, an unknown name, a bad image."""
