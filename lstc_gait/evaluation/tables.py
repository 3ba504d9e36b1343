"""Result tables as CSV + Markdown files with a header naming how they were made.

CSV: ``# key: value`` comment lines, then the table (read back with
``pandas.read_csv(path, comment="#", index_col=0)`` or :func:`read_table`). Markdown: the same
header as ``key: value`` lines above the table. Numbers are percent; NaN prints as ``-`` in
Markdown and stays empty in CSV. Both files are written atomically (:mod:`lstc_gait.utils.fileio`).
No mlflow here: the tracking code logs these files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from lstc_gait.utils.fileio import atomic_write_text

# the facts every table must state (docs/PROTOCOLS.md "Reporting"); missing ones are written as "n/a"
REQUIRED_HEADER = ("protocol", "distance", "checkpoint", "split", "misses_counted")


_ALIASES = {"metric": "distance", "misses": "misses_counted"}


def _parse_header(header: Mapping[str, object] | str) -> dict[str, object]:
    """A mapping, or a ``"key: value | key: value"`` string, -> dict (aliases folded in)."""
    if isinstance(header, str):
        parsed: dict[str, object] = {}
        for part in header.split("|"):
            key, sep, val = part.partition(":")
            if part.strip():
                parsed[key.strip() if sep else "note"] = val.strip() if sep else part.strip()
        header = parsed
    if not isinstance(header, Mapping):
        raise TypeError(f"table header must be a mapping or a 'key: value | ...' string, got {type(header).__name__}")
    return {_ALIASES.get(str(k).strip(), str(k).strip()): v for k, v in header.items()}


def _header_items(header: Mapping[str, object] | str) -> list[tuple[str, str]]:
    header = _parse_header(header)
    items = [(k, header.get(k, "n/a")) for k in REQUIRED_HEADER]
    items += [(k, v) for k, v in header.items() if k not in REQUIRED_HEADER]
    out = []
    for k, v in items:
        key = str(k).strip()
        val = str(v).replace("\r", " ").replace("\n", " ").strip()
        if not key or ":" in key:
            raise ValueError(f"table header key {k!r} must be non-empty and contain no ':'")
        out.append((key, val))
    return out


def _cell(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def format_table(df: pd.DataFrame) -> str:
    """Markdown (pipe) table, numbers with 2 decimals, NaN as '-'; also fine for printing."""
    headers = [str(df.index.name or "")] + [str(c) for c in df.columns]
    rows = [[str(idx)] + [_cell(v) for v in row] for idx, row in zip(df.index, df.itertuples(index=False))]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def write_table(df: pd.DataFrame, path_stem: str | os.PathLike,
                header: Mapping[str, object] | str) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md``; returns (csv_path, md_path).

    ``header``: mapping (or ``"key: value | ..."`` string) with at least protocol, distance,
    checkpoint, split, misses_counted (aliases: metric, misses); absent ones are written as n/a.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"write_table expects a pandas DataFrame, got {type(df).__name__}")
    stem = Path(path_stem)
    if stem.suffix in (".csv", ".md"):
        stem = stem.with_suffix("")
    items = _header_items(header)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    body = df.to_csv(index=True, index_label=df.index.name or "", float_format="%.4f", lineterminator="\n")
    atomic_write_text(csv_path, "".join(f"# {k}: {v}\n" for k, v in items) + body)
    md = "".join(f"{k}: {v}  \n" for k, v in items) + "\n" + format_table(df) + "\n"
    atomic_write_text(md_path, md)
    return csv_path, md_path


def read_table(csv_path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a CSV written by :func:`write_table` back as (table, header)."""
    path = Path(csv_path)
    header: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            key, _, val = line[1:].partition(":")
            header[key.strip()] = val.strip()
    df = pd.read_csv(path, comment="#", index_col=0, dtype={0: str})
    df.columns = [str(c) for c in df.columns]
    return df, header
