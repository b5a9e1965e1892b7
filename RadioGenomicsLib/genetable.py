"""The gene table that `predict` writes: its columns, their types and units, and the
marker genes shown first. Standard library only: the Slicer module imports it before
torch and pandas are installed.
"""

from __future__ import annotations

# genes a radiologist looks for first: listed in every report, pinned on top in Slicer
MARKER_GENES = ("IDH1", "EGFR", "MGMT", "KRAS", "ALK", "BRAF", "CHEK2", "TP53")

# genes the DICOM structured report lists by default (the highest ranked, and the markers):
# ~11 ms a gene to build and save, a genome-wide report minutes (BENCHMARKS.md)
SR_GENES = 1000

TABLE_COLUMNS = ("rank", "gene_id", "gene_name", "predicted", "lower", "upper", "cohort_z",
                 "cohort_percentile", "validation_r", "validation_p_adj", "reliable")
INTEGER_COLUMNS = ("rank",)
BOOLEAN_COLUMNS = ("reliable",)
TEXT_COLUMNS = ("gene_id", "gene_name")  # every other column is a number


def column_units(target_transform: str, target_units: str) -> dict[str, str]:
    """Units of the table's numeric columns, for a bundle's target (e.g. log10(1+x), FPKM-UQ)."""
    value = f"{target_transform} of {target_units}"
    return {"predicted": value, "lower": value, "upper": value,
            "cohort_z": "SD of the training cohort", "cohort_percentile": "%",
            "validation_r": "Pearson r", "validation_p_adj": "Holm-Sidak adjusted p"}
