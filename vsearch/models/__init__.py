"""Models: the model registry, loading (torch/timm/open_clip), ONNX export and sessions, model sources.

May import: imaging, ground. Knows nothing of storage or search.
"""
