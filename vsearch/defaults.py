"""Defaults that the library, the Python API and the CLI's option declarations must share.

Standard library only, so that the CLI can state them in its option declarations without
importing numpy (``vsearch --help`` stays quick).
"""

#: Images per forward pass while indexing (``--batch-size``).
DEFAULT_BATCH_SIZE = 16
#: The most images one forward pass takes: 4096 224-pixel images are 2.3 GiB of input alone,
#: more than a large GPU gains anything from (throughput is flat past a few hundred); more is
#: a typo (``--batch-size 1e22`` would be taken as one batch of the whole folder).
MAX_BATCH_SIZE = 4_096
#: Annoy trees (``--trees``): more trees cost build time and disk, and buy recall at a given
#: search_k. At 512-d a tree is small beside the items (1M x 512: 2.9 GB index with 50 trees,
#: 1.95 GB of vectors).
DEFAULT_TREES = 50
#: Average query expansion depth every search uses unless told (``qe=``, ``--qe``): re-query with
#: the mean of the query and its top 2 results. Chosen by the rule in docs/defaults.md: class
#: mAP@10 +0.036 [95% CI +0.029, +0.043] on flowers17 and +0.028 [+0.026, +0.030] on
#: tiny-imagenet, edited copies' recall@1 unchanged (the copy-first step keeps the unaltered
#: nearest neighbour at rank 1 in any case). 0 searches with the query's own vector alone.
DEFAULT_QE = 2
#: The most Annoy trees a build makes: the file grows by a tree's worth with each (50 trees is
#: 2.9 GB at 1M x 512), and Annoy counts them in a C int. Twenty times the default is room for
#: any trade of recall against size; more is a typo (``--trees 99999999999999999999``).
MAX_TREES = 1_000
#: The most neighbours database-side augmentation averages (``--dba``): measured useful values
#: are single digits (docs: --dba 5); past this a stored vector is the mean of a crowd.
MAX_DBA = 1_000
