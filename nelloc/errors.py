"""The exceptions NeLLoC raises; the CLI turns each into one line on stderr and a non-zero exit."""


class NellocError(Exception):
    """Base class of every error NeLLoC reports to users."""


class BadStreamError(NellocError):
    """A .nlc stream that cannot be decoded: truncated, corrupted, wrong magic or version."""


class ModelError(NellocError):
    """A model that is missing, unreadable, or not the one a stream was made with."""


class UnsupportedImageError(NellocError):
    """An input that is not an image NeLLoC can store, or is too large."""
