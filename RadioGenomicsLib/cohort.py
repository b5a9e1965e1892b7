"""The cohort manifest, its validation, and readers for the BraTS-TCGA and TCIA layouts.

A manifest is a CSV with one row per patient: `patient_id`, one column per image
channel (t1, t1gd, t2, flair, or ct), `segmentation` and an optional `label` (the
tumour's value in a labelmap; empty: any non-zero). Paths are relative to the
manifest's folder; a channel may be a file (NIfTI, NRRD) or a DICOM series folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Sequence

import pandas as pd

from RadioGenomicsLib import gdc
from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.choices import TCIA_PATTERNS
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import CT_CHANNELS, KNOWN_CHANNELS, MRI_CHANNELS

PATIENT_COLUMN = "patient_id"
SEGMENTATION_COLUMN = "segmentation"
LABEL_COLUMN = "label"
MAX_LABEL = 2**31 - 1  # the largest value a labelmap's voxel type is read as here

# BraTS-TCGA: TCGA-02-0006_1996.08.23_t1Gd.nii.gz; the manually corrected GLISTRboost
# segmentation is preferred to the automatic one. Labels 1 necrosis, 2 oedema, 4 enhancing.
# (file name parts compared in lower case)
BRATS_CHANNELS = ("t1", "t1gd", "t2", "flair")
BRATS_SEGMENTATIONS = ("glistrboost_manuallycorrected", "glistrboost")
BRATS_LABELS = {1: "necrosis", 2: "oedema", 4: "enhancing"}
_BRATS_NAME = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})_([^_]+)_(.+)\.nii(\.gz)?$")

# a file's name -> its channel, when the name makes it obvious (the viewer's study
# folders): separators around the token, so that "t1" never matches inside "t12" or a date
_SEPARATED = r"(?:^|[^a-z0-9])(?:{})(?:[^a-z0-9]|$)"
FILE_NAME_PATTERNS = {
    "flair": _SEPARATED.format(r"(?:t2[-_ ]?)?flair"),
    "t1gd": _SEPARATED.format(r"t1[-_ ]?(?:gd|ce|c|post|gad|contrast)|mprage"),
    "t1": _SEPARATED.format(r"t1w?"),
    "t2": _SEPARATED.format(r"t2w?"),
    "ct": _SEPARATED.format(r"ct"),
}
TCIA_COLUMNS = ("Subject ID", "Series Description", "Modality", "File Location")
EXTRA_EXPRESSION = "expression without images"  # a problem unless allowed
SEGMENTATION_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


class CohortError(InputError):
    """Every problem of a cohort at once: one summary line, the full list in `problems`."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.problems = problems
        kinds = pd.Series([p.split(":", 1)[0] for p in problems]).value_counts(sort=False)
        counted = ", ".join(f"{count} × {kind}" for kind, count in kinds.items())
        super().__init__(path, f"{len(problems)} problems ({counted}); first: {problems[0]}")

    def report(self) -> str:
        return "\n".join(f"  {problem}" for problem in self.problems)


@dataclass
class ManifestReport:
    """What a reader found: the manifest rows and what it left out, and why."""

    table: pd.DataFrame  # patient_id, channels..., segmentation, label (absolute paths)
    skipped: dict[str, str] = field(default_factory=dict)  # patient -> why
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        channels = [c for c in KNOWN_CHANNELS if c in self.table.columns]
        lines = [f"patients: {len(self.table)} (channels {', '.join(channels) or 'none'})",
                 f"skipped: {len(self.skipped)}"]
        lines += [f"  {patient}: {why}" for patient, why in self.skipped.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------- manifest files

def channel_columns(table: pd.DataFrame) -> list[str]:
    """The image-channel columns of a manifest, in canonical order."""
    return [c for c in KNOWN_CHANNELS if c in table.columns]


def write_manifest(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a manifest CSV with its paths made relative to the manifest's folder."""
    folder = Path(path).absolute().parent
    relative = table.copy()
    for column in channel_columns(table) + [SEGMENTATION_COLUMN]:
        relative[column] = [os.path.relpath(p, folder) if p else "" for p in table[column]]
    columns = [PATIENT_COLUMN] + channel_columns(table) + [SEGMENTATION_COLUMN]
    if LABEL_COLUMN in table.columns:
        columns.append(LABEL_COLUMN)
    with atomic_path(path) as tmp:
        relative.loc[:, columns].to_csv(tmp, index=False, lineterminator="\n")


def _read_manifest_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as error:
        raise InputError(path, f"cannot read the manifest ({error})") from None
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in (PATIENT_COLUMN, SEGMENTATION_COLUMN) if c not in table.columns]
    if missing or not channel_columns(table):
        raise InputError(path, f"a manifest needs the columns {PATIENT_COLUMN}, "
                               f"{SEGMENTATION_COLUMN} and one or more channels among "
                               f"{', '.join(KNOWN_CHANNELS)}; it has {', '.join(table.columns)}")
    if table.empty:
        raise InputError(path, "the manifest lists no patients")
    return table.apply(lambda column: column.str.strip())


def _row_problems(row: pd.Series, columns: list[str], folder: Path) -> list[str]:
    problems = []
    patient = row[PATIENT_COLUMN] or "(no patient_id)"
    for column in columns:
        if not row[column]:
            problems.append(f"no path: {patient} {column}")
        elif not (folder / row[column]).exists():
            problems.append(f"missing file: {patient} {column} {row[column]}")
    label = row.get(LABEL_COLUMN, "")
    if label and not re.fullmatch(r"[0-9]+", label):
        problems.append(f"bad label: {patient} {label!r} is not a whole number")
    elif label and int(label) > MAX_LABEL:
        problems.append(f"bad label: {patient} {label[:30]!r} is larger than {MAX_LABEL}")
    return problems


def _expression_patients(expression: str | os.PathLike | pd.DataFrame | object) -> list[str]:
    from RadioGenomicsLib.expression import ExpressionMatrix, read_matrix

    if isinstance(expression, (str, os.PathLike)):
        expression = read_matrix(expression)
    if isinstance(expression, ExpressionMatrix):
        expression = expression.values
    return [str(p) for p in expression.index]


def validate_cohort(manifest: str | os.PathLike,
                    expression: str | os.PathLike | pd.DataFrame | None = None, *,
                    allow_extra_expression: bool = False) -> pd.DataFrame:
    """Check a manifest (and its match with an expression matrix) before long work.

    Returns the manifest indexed by patient_id with absolute paths and `label` as a
    nullable integer. Raises CohortError listing every problem at once: unknown
    columns, mixed CT and MRI channels, missing patient ids, duplicate patients,
    missing or empty paths, bad labels, patients without expression and (unless
    allowed) expression without images. `expression`: a matrix path, an
    ExpressionMatrix or a patients × genes DataFrame.
    """
    path = Path(manifest)
    table = _read_manifest_table(path)
    folder = path.absolute().parent
    channels = channel_columns(table)
    problems = [f"unknown column: {c}" for c in table.columns
                if c not in (PATIENT_COLUMN, SEGMENTATION_COLUMN, LABEL_COLUMN, *channels)]
    if set(channels) & set(CT_CHANNELS) and set(channels) & set(MRI_CHANNELS):
        problems.append(f"mixed modalities: ct with {', '.join(c for c in channels if c != 'ct')}")
    problems += [f"no patient_id: row {i + 2}" for i in range(len(table))
                 if not table[PATIENT_COLUMN].iat[i]]
    duplicated = table[PATIENT_COLUMN][table[PATIENT_COLUMN].duplicated() &
                                       (table[PATIENT_COLUMN] != "")]
    problems += [f"duplicate patient: {p}" for p in dict.fromkeys(duplicated)]
    for _, row in table.iterrows():
        problems += _row_problems(row, channels + [SEGMENTATION_COLUMN], folder)
    if expression is not None:
        with_expression = set(_expression_patients(expression))
        with_images = set(table[PATIENT_COLUMN])
        problems += [f"no expression: {p}" for p in sorted(with_images - with_expression) if p]
        if not allow_extra_expression:
            problems += [f"{EXTRA_EXPRESSION}: {p}"
                         for p in sorted(with_expression - with_images)]
    if problems:
        raise CohortError(path, problems)
    for column in channels + [SEGMENTATION_COLUMN]:
        table[column] = [os.fspath(folder / p) for p in table[column]]
    if LABEL_COLUMN in table.columns:
        table[LABEL_COLUMN] = pd.array([int(v) if v else None for v in table[LABEL_COLUMN]],
                                       dtype="Int64")
    return table.set_index(PATIENT_COLUMN)


# ---------------------------------------------------------------- BraTS-TCGA folders

def read_brats(folder: str | os.PathLike) -> ManifestReport:
    """Manifest rows from BraTS-TCGA NIfTI folders (found anywhere under `folder`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    studies: dict[tuple[str, str], dict[str, Path]] = {}
    for file in sorted(folder.rglob("TCGA-*.nii*")):
        match = _BRATS_NAME.match(file.name)
        if match:
            studies.setdefault((match.group(1), match.group(2)), {})[match.group(3).lower()] = file
    if not studies:
        raise InputError(folder, "no BraTS-TCGA files (TCGA-XX-XXXX_DATE_t1.nii.gz ...) inside")
    report = ManifestReport(pd.DataFrame())
    rows = []
    dates: dict[str, list[str]] = {}
    for patient, date in studies:
        dates.setdefault(patient, []).append(date)
    for (patient, date), files in studies.items():
        if len(dates[patient]) > 1:
            report.skipped[patient] = f"several studies ({', '.join(dates[patient])})"
            continue
        missing = [kind for kind in BRATS_CHANNELS if kind not in files]
        segmentation = next((files[s] for s in BRATS_SEGMENTATIONS if s in files), None)
        if missing or segmentation is None:
            absent = missing + ([] if segmentation else ["GlistrBoost segmentation"])
            report.skipped[patient] = f"no {', '.join(absent)}"
            continue
        row = {PATIENT_COLUMN: gdc.case_id(patient, folder)}
        row.update({channel: os.fspath(files[channel].absolute()) for channel in BRATS_CHANNELS})
        row[SEGMENTATION_COLUMN] = os.fspath(segmentation.absolute())
        if BRATS_SEGMENTATIONS[0] not in segmentation.name.lower():
            report.notes.append(f"{patient}: automatic GlistrBoost segmentation "
                                "(no manually corrected one)")
        rows.append(row)
    report.table = pd.DataFrame(rows, columns=[PATIENT_COLUMN, *MRI_CHANNELS, SEGMENTATION_COLUMN])
    labels = ", ".join(f"{value} {name}" for value, name in BRATS_LABELS.items())
    report.notes.append(f"BraTS labels: {labels}; label left empty (the tumour is every "
                        "non-zero voxel)")
    return report


# ---------------------------------------------------------------- TCIA downloads

def _tcia_location(folder: Path, location: str) -> Path:
    # the NBIA Data Retriever writes Windows-style relative paths (.\TCGA-GBM\...)
    parts = PureWindowsPath(location.strip()).parts if "\\" in location else Path(location).parts
    return folder.joinpath(*[p for p in parts if p not in (".", "")])


def _tcia_channel(description: str, modality: str, patterns: dict[str, re.Pattern]) -> str | None:
    if modality.upper() == "CT":
        return "ct"
    if modality.upper() != "MR":
        return None
    return next((c for c, pattern in patterns.items() if pattern.search(description)), None)


def _find_segmentation(patient: str, folder: Path, pattern: str) -> tuple[Path | None, str]:
    """The one segmentation of a patient in `folder` ('' or why not)."""
    glob = pattern.format(patient_id=patient)
    found = sorted(p for p in folder.glob(glob)
                   if p.name.lower().endswith(SEGMENTATION_SUFFIXES) or p.is_dir())
    if len(found) == 1:
        return found[0], ""
    if not found:
        return None, f"no segmentation matching {glob} in {folder}"
    return None, f"{len(found)} segmentations match {glob}: {', '.join(p.name for p in found)}"


def read_tcia(folder: str | os.PathLike, segmentations: str | os.PathLike | None = None, *,
              segmentation_pattern: str = "{patient_id}*",
              patterns: dict[str, str] | None = None) -> ManifestReport:
    """Manifest rows from a TCIA download (its `metadata.csv`, as the NBIA Data Retriever
    writes it). Series descriptions map to channels with `patterns` (regular
    expressions, case-insensitive, tried in order; defaults TCIA_PATTERNS); CT series
    are the channel `ct`. Several series for one channel: the one with most images.
    Several studies: the one with most channels, then the earliest.
    """
    folder = Path(folder)
    metadata_path = folder / "metadata.csv"
    if not metadata_path.is_file():
        raise InputError(folder, "no metadata.csv (the NBIA Data Retriever writes one)")
    try:
        metadata = pd.read_csv(metadata_path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as error:
        raise InputError(metadata_path, f"cannot read ({error})") from None
    missing = [c for c in TCIA_COLUMNS if c not in metadata.columns]
    if missing:
        raise InputError(metadata_path, f"no column {', '.join(missing)}")
    compiled = {}
    for channel, regex in (patterns or TCIA_PATTERNS).items():
        if channel not in MRI_CHANNELS:
            raise InputError(None, f"pattern for channel {channel!r}: patterns name MRI "
                                   f"channels ({', '.join(MRI_CHANNELS)}); CT series are "
                                   "found by their modality")
        try:
            compiled[channel] = re.compile(regex, re.I)
        except re.error as error:
            raise InputError(None, f"pattern {channel}={regex!r}: {error}") from None
    metadata["channel"] = [_tcia_channel(d, m, compiled) for d, m in
                           zip(metadata["Series Description"], metadata["Modality"])]
    metadata["images"] = pd.to_numeric(metadata.get("Number of Images", "0"),
                                       errors="coerce").fillna(0)
    if "Study UID" not in metadata.columns:
        metadata["Study UID"] = ""
    metadata["date"] = pd.to_datetime(metadata.get("Study Date", ""), errors="coerce",
                                      format="mixed")
    report = ManifestReport(pd.DataFrame())
    rows = []
    for subject, series in metadata.groupby("Subject ID", sort=True):
        row = _tcia_row(subject, series, folder, report)
        if row is None:
            continue
        row[SEGMENTATION_COLUMN] = ""
        if segmentations is not None:
            path, why = _find_segmentation(row[PATIENT_COLUMN], Path(segmentations),
                                           segmentation_pattern)
            if path:
                row[SEGMENTATION_COLUMN] = os.fspath(path.absolute())
            else:
                report.notes.append(f"{subject}: {why}")
        rows.append(row)
    channels = [c for c in KNOWN_CHANNELS if any(c in r for r in rows)]
    report.table = pd.DataFrame(rows, columns=[PATIENT_COLUMN, *channels, SEGMENTATION_COLUMN]
                                ).fillna("")
    if segmentations is None:
        report.notes.append("no --segmentations given: the segmentation column is empty")
    return report


def _tcia_row(subject: str, series: pd.DataFrame, folder: Path,
              report: ManifestReport) -> dict[str, str] | None:
    usable = series[series["channel"].notna()]
    if usable.empty:
        report.skipped[subject] = "no series matches a channel"
        return None
    studies = usable.groupby("Study UID", sort=False)
    ranked = sorted(studies, key=lambda s: (-s[1]["channel"].nunique(),
                                            s[1]["date"].min() if s[1]["date"].notna().any()
                                            else pd.Timestamp.max))
    study = ranked[0][1]
    if len(ranked) > 1:
        report.notes.append(f"{subject}: {len(ranked)} studies, took the one of "
                            f"{study['date'].min().date() if study['date'].notna().any() else 'unknown date'}"
                            " (most channels, then earliest)")
    if study["channel"].eq("ct").any() and study["channel"].ne("ct").any():
        study = study[study["channel"] == "ct"]
        report.notes.append(f"{subject}: CT and MR series in one study, took the CT")
    row = {PATIENT_COLUMN: gdc.case_id(subject, folder / "metadata.csv")
           if subject.upper().startswith("TCGA-") else subject}
    for channel, candidates in study.groupby("channel", sort=False):
        best = candidates.sort_values("images", ascending=False, kind="stable").iloc[0]
        if len(candidates) > 1:
            report.notes.append(f"{subject} {channel}: {len(candidates)} series match, took "
                                f"{best['Series Description']!r} (most images)")
        location = _tcia_location(folder, best["File Location"])
        row[channel] = os.fspath(location.absolute())
    return row


def channel_from_name(name: str, channels: Sequence[str] = KNOWN_CHANNELS) -> str | None:
    """The channel a file or folder name makes obvious (t1, t1gd/t1ce, t2, flair, ct), among
    `channels`; None when the name says nothing or fits several."""
    text = name.lower()
    for suffix in SEGMENTATION_SUFFIXES:
        text = text.removesuffix(suffix)
    found = [c for c, pattern in FILE_NAME_PATTERNS.items() if re.search(pattern, text)]
    # "t1_post" also reads as "t1", "t2_flair" as "t2": the longer name wins
    for longer, shorter in (("t1gd", "t1"), ("flair", "t2")):
        if longer in found:
            found = [c for c in found if c != shorter]
    found = [c for c in found if c in channels]
    return found[0] if len(found) == 1 else None
