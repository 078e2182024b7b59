"""The ``vsearch`` command line: parse, call the public API (:mod:`vsearch.api`), render.

May import everything; nothing in the library imports it.
"""
