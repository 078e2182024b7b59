"""Imaging: find image files under a folder and decode one safely; RAW; edited copies; local-feature verification.

Modules: scan (image files under a folder), reading (one file's bytes, capped), opening (Pillow
headers; HEIF registration), colour (any mode to RGB), exifdate (capture day), images (the safe
decoder; re-exports the names other packages use), raw, augment, verify, thumbnails.

May import: errors, atomic (ground) only. Knows no model, no storage. Importing it changes no
process-wide state (Pillow's pixel limit, the warnings filters and the environment stay as they are).
"""
