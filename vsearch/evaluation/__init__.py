"""Evaluation: labels, ranking metrics, evaluate, A/B compare.

May import: learning, retrieval and below.
"""
