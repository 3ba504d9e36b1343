"""Evaluation: distances and retrieval metrics, the field's protocols, embedding extraction, tables.

Imports here are light (numpy, pandas, torch); nothing imports mlflow.
"""

from .crossview import CrossViewCounts, crossview_counts, crossview_matrix
from .embed import extract_embeddings
from .metrics import METRICS, pairwise_distance, retrieval_metrics, summarize_ranks
from .protocols import (
    PROTOCOLS,
    ProtocolError,
    check_protocol_data,
    evaluate_casia_b,
    evaluate_ou_mvlp,
    evaluate_retrieval,
    protocol_metrics,
)
from .tables import format_table, read_table, write_table

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "CrossViewCounts",
    "ProtocolError",
    "check_protocol_data",
    "crossview_counts",
    "crossview_matrix",
    "evaluate_casia_b",
    "evaluate_ou_mvlp",
    "evaluate_retrieval",
    "extract_embeddings",
    "format_table",
    "pairwise_distance",
    "protocol_metrics",
    "read_table",
    "retrieval_metrics",
    "summarize_ranks",
    "write_table",
]
