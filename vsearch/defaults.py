"""Defaults that the library, the Python API and the CLI's option declarations must share.

Standard library only, so that the CLI can state them in its option declarations without
importing numpy (``vsearch --help`` stays quick).
"""

#: Images per forward pass while indexing (``--batch-size``).
DEFAULT_BATCH_SIZE = 16
#: Annoy trees (``--trees``): more trees cost build time and disk, and buy recall at a given
#: search_k. At 512-d a tree is small beside the items (1M x 512: 2.9 GB index with 50 trees,
#: 1.95 GB of vectors).
DEFAULT_TREES = 50
