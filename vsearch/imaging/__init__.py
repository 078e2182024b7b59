"""Imaging: find image files under a folder and decode one safely; RAW; edited copies; local-feature verification.

May import: errors, atomic (ground) only. Knows no model, no storage.
"""
