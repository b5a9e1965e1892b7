"""The GENCODE v36 gene table that the GDC's STAR - Counts files use.

60,660 genes (`_PAR_Y` ids included) with versioned Ensembl ids, symbols, gene types
and exonic lengths, shipped as `resources/gencode_v36_genes.tsv.gz` (built from Debian's
Bioconductor data by `Resources/build_gencode_table.py`; its header lines say from what).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import pandas as pd

TABLE_PATH = Path(__file__).parent / "resources" / "gencode_v36_genes.tsv.gz"
COLUMNS = ("gene_id", "gene_name", "gene_type", "length_bp")

_VERSION = re.compile(r"\.\d+(?=(_PAR_Y)?$)")


def unversioned(gene_id: str) -> str:
    """ENSG00000141510.18 -> ENSG00000141510; ENSG00000182378.14_PAR_Y -> ..._PAR_Y."""
    return _VERSION.sub("", gene_id.strip())


@lru_cache(maxsize=1)
def gene_table() -> pd.DataFrame:
    """The gene table: gene_id, gene_name, gene_type, length_bp (one row per gene).

    Cached: the same frame is returned every call, so do not modify it.
    """
    return pd.read_csv(TABLE_PATH, sep="\t", comment="#",
                       dtype={"gene_id": str, "gene_name": str, "gene_type": str,
                              "length_bp": "int64"}, keep_default_na=False)


@lru_cache(maxsize=1)
def _symbol_by_id() -> dict[str, str]:
    table = gene_table()
    by_id = dict(zip(table["gene_id"], table["gene_name"]))
    by_id.update(zip(table["gene_id"].map(unversioned), table["gene_name"]))
    return by_id


def gene_names(ids: Iterable[str]) -> list[str]:
    """The symbol of each gene id (with or without its version suffix); "" when unknown."""
    symbols = _symbol_by_id()
    return [symbols.get(i.strip(), symbols.get(unversioned(i), "")) for i in ids]
