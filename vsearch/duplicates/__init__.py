"""Duplicates: grouping near-duplicates, keeper rules, actions (move/trash) with undo logs, not-duplicate marks.

May import: retrieval and below.
"""
