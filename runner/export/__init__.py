"""Exports of a run's records: JSONL, CSV, Parquet; plain, chat or preference rows; a dataset card."""

from .formats import (
    CHOICES,
    FORMATS,
    SHAPES,
    Export,
    ExportError,
    Options,
    dataset_card,
    default_chat_fields,
    default_choose,
    in_order,
    iter_records,
    pair_judge,
    parse_fields,
    record_keys,
    write_records,
)

__all__ = [
    "CHOICES",
    "FORMATS",
    "SHAPES",
    "Export",
    "ExportError",
    "Options",
    "dataset_card",
    "default_chat_fields",
    "default_choose",
    "in_order",
    "iter_records",
    "pair_judge",
    "parse_fields",
    "record_keys",
    "write_records",
]
