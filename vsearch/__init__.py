"""vsearch: visual search over local image folders.

image -> preprocess -> model -> embedding -> nearest-neighbour search -> re-rank & filter -> results
"""

__version__ = "0.1.0"
