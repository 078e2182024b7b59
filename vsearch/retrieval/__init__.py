"""Retrieval (online): query vectors (stored or embedded), search, exact re-score, re-rank and filter, freshness.

May import: vectors, storage, models (lazily, for new photos), imaging, ground.
"""
