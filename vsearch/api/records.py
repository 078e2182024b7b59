"""The records that scoring returns, for callers that show them (the CLI's report, say).

Importing this module imports Pillow with the evaluation modules; the light API
(``vsearch.api``) does not import it.
"""

from __future__ import annotations

from vsearch.evaluation.compare import Comparison, Evaluation
from vsearch.evaluation.evaluate import EvalReport, QueryRecord
from vsearch.evaluation.labels import LabelledQuery, Labels
from vsearch.learning.judgments import Judgment
from vsearch.learning.propensity import ClickReport

__all__ = ["ClickReport", "Comparison", "EvalReport", "Evaluation", "Judgment", "LabelledQuery", "Labels",
           "QueryRecord"]
