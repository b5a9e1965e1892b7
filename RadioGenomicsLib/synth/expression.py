"""Synthetic RNA-Seq: GENCODE v36 genes, negative-binomial counts, a known share linked.

Each gene has a baseline expected count (log-normal, by gene type: many lowly expressed
genes, so some have a median of zero), a dispersion, and for the linked genes an effect
of one latent factor: log2 E[count] = baseline + effect × factor (+ log2 library depth).
Counts are gamma-Poisson (negative binomial); TPM, FPKM and FPKM-UQ follow from them as
the GDC computes them. Files and the sample sheet are written in the GDC's layouts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from RadioGenomicsLib.genetable import MARKER_GENES
from RadioGenomicsLib import gdc
from RadioGenomicsLib.gencode import gene_table
from RadioGenomicsLib.synth.tumour import FACTORS

# always among the genes (the first G when fewer are asked); some linked to a fixed factor
MARKER_LINKS = {"EGFR": ("proliferation", 1.0), "MGMT": ("necrosis", -0.8),
                "KRAS": ("infiltration", 0.8), "TP53": ("heterogeneity", 0.7),
                "IDH1": ("location", -0.8)}  # ALK, BRAF and CHEK2 stay pure noise
LINKED_SHARE = 0.10
EFFECT_RANGE_LOG2 = (0.25, 1.0)  # |effect| per SD of the factor
LINKED_MIN_COUNT = 10.0  # linked genes are expressed well enough for the link to show
# log10 of the baseline expected count: (mean, SD) by gene type
LOG10_COUNT = {"protein_coding": (2.2, 1.0), "lncRNA": (0.2, 1.1)}
LOG10_COUNT_OTHER = (-0.4, 1.2)
MARKER_MIN_COUNT = 200.0
DISPERSION_RANGE = (0.05, 0.3)
DEPTH_LOG_SD = 0.25
NORMAL_SHIFT_LOG2_SD = 0.8  # normal tissue differs from tumour gene by gene
SUMMARY_SHARES = {"N_unmapped": (0.01, 0.05), "N_multimapping": (0.03, 0.08),
                  "N_noFeature": (0.05, 0.15), "N_ambiguous": (0.01, 0.03)}

STAR_SUFFIX = ".rna_seq.augmented_star_gene_counts.tsv"
SHEET_NAME = "gdc_sample_sheet.tsv"
PROJECT_ID = "TCGA-SYNTH"
TISSUE_SOURCE_SITE = "S1"


@dataclass
class ExpressionModel:
    """Genes (gene table rows) and their parameters; effects: genes × FACTORS (log2)."""

    genes: pd.DataFrame
    log2_baseline: np.ndarray
    effects: np.ndarray
    dispersion: np.ndarray
    normal_shift: np.ndarray

    def linked(self) -> list[dict[str, object]]:
        """The linked genes with their factor and effect, strongest first."""
        rows = []
        for g, k in zip(*np.nonzero(self.effects)):
            rows.append({"gene_id": self.genes["gene_id"].iloc[g],
                         "gene_name": self.genes["gene_name"].iloc[g],
                         "factor": FACTORS[k],
                         "effect_log2": round(float(self.effects[g, k]), 6),
                         "baseline_count": round(float(2 ** self.log2_baseline[g]), 3)})
        return sorted(rows, key=lambda row: (-abs(row["effect_log2"]), row["gene_id"]))


def _select_genes(count: int, rng: np.random.Generator) -> pd.DataFrame:
    """`count` genes of GENCODE v36, the markers first, in the gene table's order."""
    table = gene_table()
    marker_rows = [int(np.flatnonzero(table["gene_name"] == name)[0]) for name in MARKER_GENES]
    rows = marker_rows[:count]
    others = np.setdiff1d(np.arange(len(table)), marker_rows)
    rows += rng.choice(others, size=count - len(rows), replace=False).tolist()
    return table.iloc[np.sort(rows)].reset_index(drop=True)


def draw_model(gene_count: int, rng: np.random.Generator) -> ExpressionModel:
    genes = _select_genes(gene_count, rng)
    log10_count = np.empty(len(genes))
    for index, kind in enumerate(genes["gene_type"]):
        mean, sd = LOG10_COUNT.get(kind, LOG10_COUNT_OTHER)
        log10_count[index] = rng.normal(mean, sd)
    is_marker = genes["gene_name"].isin(MARKER_GENES).to_numpy()
    log10_count[is_marker] = np.maximum(log10_count[is_marker], np.log10(MARKER_MIN_COUNT))
    log2_baseline = log10_count * np.log2(10)

    effects = np.zeros((len(genes), len(FACTORS)))
    for name, (factor, effect) in MARKER_LINKS.items():
        effects[genes["gene_name"].to_numpy() == name, FACTORS.index(factor)] = effect
    wanted = int(round(LINKED_SHARE * len(genes))) - int((effects != 0).any(axis=1).sum())
    candidates = np.flatnonzero(~is_marker & (log10_count >= np.log10(LINKED_MIN_COUNT)))
    if len(candidates) < wanted:  # tiny gene sets: the best expressed instead
        candidates = np.setdiff1d(np.argsort(-log10_count), np.flatnonzero(is_marker))
    chosen = np.sort(rng.choice(candidates, size=max(wanted, 0), replace=False))
    for order, g in enumerate(chosen):  # round-robin: every factor drives some genes
        magnitude = rng.uniform(*EFFECT_RANGE_LOG2)
        effects[g, order % len(FACTORS)] = magnitude * rng.choice((-1.0, 1.0))
    return ExpressionModel(genes, log2_baseline, effects,
                           rng.uniform(*DISPERSION_RANGE, len(genes)),
                           rng.normal(0, NORMAL_SHIFT_LOG2_SD, len(genes)))


def draw_counts(model: ExpressionModel, latent: np.ndarray | None,
                rng: np.random.Generator) -> np.ndarray:
    """One sample's counts; latent None: a normal-tissue sample (no tumour factors)."""
    log2_mean = model.log2_baseline + rng.normal(0, DEPTH_LOG_SD) / np.log(2)
    log2_mean = log2_mean + (model.normal_shift if latent is None else model.effects @ latent)
    mean = np.exp2(log2_mean)
    shape = 1 / model.dispersion
    return rng.poisson(rng.gamma(shape, mean / shape)).astype(np.int64)


def star_table(model: ExpressionModel, counts: np.ndarray,
               rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, int]]:
    """The STAR - Counts table of one sample and its N_* summary counts."""
    genes = model.genes
    tpm, fpkm, fpkm_uq = gdc.star_units(counts, genes["length_bp"].to_numpy(),
                                        (genes["gene_type"] == "protein_coding").to_numpy())
    # an unstranded library: the reads split about evenly between the two strands
    first = rng.binomial(counts, 0.5)
    table = pd.DataFrame({
        "gene_id": genes["gene_id"], "gene_name": genes["gene_name"],
        "gene_type": genes["gene_type"], "unstranded": counts, "stranded_first": first,
        "stranded_second": counts - first, "tpm_unstranded": tpm,
        "fpkm_unstranded": fpkm, "fpkm_uq_unstranded": fpkm_uq,
    }).loc[:, list(gdc.STAR_COLUMNS)]
    total = int(counts.sum())
    summary = {name: int(total * rng.uniform(*share)) for name, share in SUMMARY_SHARES.items()}
    return table, summary


@dataclass(frozen=True)
class Sample:
    """One expression file: its case, sample barcode and GDC ids."""

    case_id: str
    sample_id: str
    tumour: bool
    file_id: str
    file_name: str

    @property
    def relative_path(self) -> str:
        return f"{self.file_id}/{self.file_name}"


def case_barcode(index: int) -> str:
    return f"TCGA-{TISSUE_SOURCE_SITE}-{index + 1:04d}"


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def plan_samples(patients: int, rng: np.random.Generator) -> list[Sample]:
    """A primary tumour (01A) per patient; a few also a second vial (01B) or a normal (11A)."""
    extra = max(1, int(round(0.08 * patients)))
    chosen = rng.permutation(patients)
    second_vial, normal = set(chosen[:extra].tolist()), set(chosen[extra:2 * extra].tolist())
    samples = []
    for index in range(patients):
        case = case_barcode(index)
        kinds = [("01A", True)] + [("01B", True)] * (index in second_vial) \
            + [("11A", False)] * (index in normal)
        for code, tumour in kinds:
            samples.append(Sample(case, f"{case}-{code}", tumour, _uuid(rng),
                                  _uuid(rng) + STAR_SUFFIX))
    return samples


def write_sample_sheet(path: Path, samples: list[Sample]) -> None:
    """The GDC portal's sample sheet (the newer layout)."""
    rows = pd.DataFrame({
        "File ID": [s.file_id for s in samples],
        "File Name": [s.file_name for s in samples],
        "Data Category": "Transcriptome Profiling",
        "Data Type": "Gene Expression Quantification",
        "Project ID": PROJECT_ID,
        "Case ID": [s.case_id for s in samples],
        "Sample ID": [s.sample_id for s in samples],
        "Tissue Type": ["Tumor" if s.tumour else "Normal" for s in samples],
        "Tumor Descriptor": ["Primary" if s.tumour else "Not Applicable" for s in samples],
        "Specimen Type": "Solid Tissue",
        "Preservation Method": "Unknown",
    })
    gdc.write_sample_sheet(path, rows)
