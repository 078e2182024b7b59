"""Vectors: nearest-neighbour indexes (exact, Annoy, IVF-PQ), compression, the trained head, the search space.

May import: storage (read views) and ground.
"""
