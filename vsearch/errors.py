"""The one error family a user can cause. The CLI prints ``error: <message>`` and exits 1."""


class VsearchError(Exception):
    """Anything the user can cause or fix: bad input, a missing index, a model mismatch."""


class ImageDecodeError(VsearchError):
    """One image could not be read; the indexer counts it as a named skip."""


class IndexMissingError(VsearchError):
    """No index where one was expected."""


class IndexCorruptError(VsearchError):
    """Files in the index directory disagree with each other or with ``meta.json``."""


class IndexBusyError(VsearchError):
    """Another process holds the index's write lock."""


class ModelMismatchError(VsearchError):
    """An index was built with a different model than the one asked for."""


class ModelUnavailableError(VsearchError):
    """A model's weights cannot be had here (no network, no checkpoint)."""


class IndexWriteError(VsearchError):
    """A file of the index could not be written: a full disk, an I/O error, no permission.

    Whatever was committed before stays readable; the failed write leaves no temporary file.
    """
