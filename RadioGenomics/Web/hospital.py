"""The viewer's way to and from the hospital: a DICOMweb server's studies as the page lists
them, and a prediction run's results as DICOM objects (RadioGenomicsLib.dicom_export)
in one zip for the browser. No Slicer library here: the app calls these in a worker
thread so that the page never freezes.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Iterable

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.pacs import StudySummary

DICOM_ZIP = "radiogenomics-dicom.zip"


def study_items(studies: Iterable[StudySummary]) -> list[dict]:
    """The page's list of a server's studies: patient, date, description (newest first)."""
    def title(study: StudySummary) -> str:
        patient = " ".join(x for x in (study.patient_name.replace("^", " ").strip(),
                                       f"({study.patient_id})" if study.patient_id else "") if x)
        date = (f"{study.date[:4]}-{study.date[4:6]}-{study.date[6:8]}"
                if len(study.date) == 8 and study.date.isdigit() else study.date)
        details = ", ".join(x for x in (study.description, study.modalities) if x)
        return " · ".join(x for x in (patient or "unnamed patient", date or "no date", details)
                          if x)

    ordered = sorted(studies, key=lambda s: s.date, reverse=True)
    return [{"title": title(s), "value": s.uid} for s in ordered]


def split_series(folder: Path) -> list[Path]:
    """A fetched study holding several image series (an MRI's T1, T1Gd, T2, FLAIR): each
    moved into a subfolder named by its description, so that the page can assign the
    channels by name like any study's; a single series stays where it is."""
    from RadioGenomicsLib.imaging import dicom_series

    found = dicom_series(folder)
    if len(found) < 2:
        return [folder]
    moved = []
    for uid, description, files in found:
        name = re.sub(r"[^A-Za-z0-9.+-]+", "_", description).strip("_.") or f"series_{uid}"
        target = folder / name
        while target.exists():  # two series of one description
            target = target.with_name(target.name + "+")
        target.mkdir()
        for file in files:
            Path(file).rename(target / Path(file).name)
        moved.append(target)
    return moved


def export_dicom(run_folder: Path, gene: str | None, out: Path) -> list[Path]:
    """A prediction run's results as DICOM into `out` (replaced whole): SEG, the map of
    `gene` as a Parametric Map (none without a gene), SR, PDF and Secondary Capture,
    and all of them in `out`.zip. InputError (the library's one line) for a study that
    was not read from DICOM."""
    from RadioGenomicsLib.dicom_export import export_run
    from RadioGenomicsLib.run import open_run

    run, bundle = open_run(run_folder)
    written = export_run(run, bundle, out, [gene] if gene else [])
    zip_files(written, out.with_suffix(".zip"))
    return written


def zip_files(files: Iterable[Path], path: Path) -> Path:
    """The files side by side (by name) in one zip, written whole or not at all."""
    with atomic_path(path) as partial:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                archive.write(file, Path(file).name)
    return path
