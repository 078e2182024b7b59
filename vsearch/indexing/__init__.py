"""Indexing (offline): compare a folder with the manifest, decode, embed in batches, commit chunks; local and Ray engines.

May import: vectors, storage, models, imaging, ground.
"""
