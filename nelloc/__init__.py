"""NeLLoC: neural local lossless image compression, exact on any machine.

    >>> import nelloc
    >>> data = nelloc.compress("photo.png")          # path, PIL image or uint8 array
    >>> image = nelloc.decompress(data)              # PIL image, same mode, size and pixels
"""

from nelloc.api import compress, decompress, info
from nelloc.errors import BadStreamError, ModelError, NellocError, UnsupportedImageError

__version__ = "0.1.0"
__all__ = [
    "compress",
    "decompress",
    "info",
    "BadStreamError",
    "ModelError",
    "NellocError",
    "UnsupportedImageError",
]
