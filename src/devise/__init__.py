"""devise: DeViSE-style visual-semantic embedding models.

A convolutional network learns to map an image to a point in a word-vector space; labels are
read back by ranking words by cosine similarity, so the model can name classes it never saw.
"""

from devise.errors import DeviseError

__version__ = "0.1.0"
__all__ = ["DeviseError", "__version__"]
