"""Learning: judgments, click logs, position-bias propensities, training the projection head.

May import: retrieval and below.
"""
