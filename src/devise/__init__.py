"""devise: DeViSE-style visual-semantic embedding models.

A convolutional network learns to map an image to a point in a word-vector space; labels are
read back by ranking words by cosine similarity, so the model can name classes it never saw.
"""

from devise.errors import DeviseError
from devise.version import __version__

__all__ = ["DeviseError", "__version__", "load", "from_pretrained", "list_pretrained"]


def __getattr__(name: str):
    """`devise.load`, `devise.from_pretrained` and `devise.list_pretrained`, imported on first use: `import devise` (and the
    command line's start) stays free of torch until a model is wanted."""
    if name in ("load", "from_pretrained", "DeviseModel"):
        from devise.model import export as portable

        return getattr(portable, name)
    if name == "list_pretrained":
        from devise.model.pretrained import list_pretrained

        return list_pretrained
    raise AttributeError(f"module 'devise' has no attribute {name!r}")
