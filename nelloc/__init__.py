"""NeLLoC: neural local lossless image compression, exact on any machine.

    >>> import nelloc
    >>> data = nelloc.compress("photo.png")          # path, PIL image or uint8 array
    >>> image = nelloc.decompress(data)              # PIL image, same mode, size and pixels
    >>> blobs = nelloc.compress_many(thumbnails)       # batched: small images share network calls
"""

from nelloc.api import compress, compress_many, decompress, decompress_many, info, set_threads
from nelloc.errors import BadStreamError, ModelError, NellocError, UnsupportedImageError

__version__ = "0.1.0"
__all__ = [
    "compress",
    "decompress",
    "compress_many",
    "decompress_many",
    "info",
    "set_threads",
    "BadStreamError",
    "ModelError",
    "NellocError",
    "UnsupportedImageError",
]
