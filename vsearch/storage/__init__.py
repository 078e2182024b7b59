"""Storage: the index directory: lock, generation commit, repair, manifest SQL, vector files, meta.json, side logs.

May import: ground (errors, atomic, identity) only. Knows nothing of models, vectors or search.
"""
