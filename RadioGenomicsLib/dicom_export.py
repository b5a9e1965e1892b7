"""Results a hospital's PACS can show: DICOM SEG, Parametric Maps, a structured report,
a one-page PDF and its Secondary Capture, all in the source study.

The source is the DICOM series the study's grid was read from; the tumour mask and the
gene maps must lie on that grid (they do: `predict` keeps everything on the first
channel's grid). Each written object is a new instance in a new series (new UIDs) of the
source study: the patient and general study modules, the Study Instance UID and the
Frame of Reference UID are copied (highdicom copies them from the source headers);
nothing else of the source headers is carried over.

    OUT/
      seg.dcm              the tumour as DICOM SEG (one segment, a neoplasm)
      map_<SYMBOL>.dcm     one Parametric Map per gene (float, real-world value mapping)
      report_sr.dcm        Comprehensive SR: one container per gene of the table
      report.pdf           one page for people
      report_sc.dcm        that page as a Secondary Capture, for viewers that show nothing else
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from RadioGenomicsLib import __version__
from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.card import RESEARCH_NOTICE as NOTICE
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.genetable import MARKER_GENES, SR_GENES
from RadioGenomicsLib.imaging import choose_dicom_series, same_grid
from RadioGenomicsLib.outputs import mark_complete

MANUFACTURER = "RadioGenomics"
# series numbers of the new series, far above a scanner's
SEG_SERIES, MAP_SERIES, SR_SERIES, SC_SERIES = 9001, 9010, 9002, 9003
# a source slice lies on a grid plane when its position is this close (mm)
PLANE_TOLERANCE_MM = 1e-2

# Concepts of the report that no standard vocabulary names: a private coding scheme
# ("99" prefix, PS3.16 8.2).
SCHEME = "99RADIOGENOMICS"
REPORT_TITLE = Code("RG0001", SCHEME, "Radiogenomic expression prediction report")
GENE_ENTRY = Code("RG0002", SCHEME, "Predicted gene expression")
GENE_SYMBOL = Code("RG0003", SCHEME, "Gene symbol")
ENSEMBL_ID = Code("RG0004", SCHEME, "Ensembl gene identifier")
PREDICTED = Code("RG0005", SCHEME, "Predicted expression")
LOWER = Code("RG0006", SCHEME, "Prediction interval lower bound")
UPPER = Code("RG0007", SCHEME, "Prediction interval upper bound")
COHORT_Z = Code("RG0008", SCHEME, "Z-score against the training cohort")
RELIABLE = Code("RG0009", SCHEME, "Validated in the model's cross-validation")
RANK = Code("RG0010", SCHEME, "Rank")
VALIDATION = Code("RG0011", SCHEME, "Model validation summary")
USE_NOTICE = Code("RG0012", SCHEME, "Intended use")
UNITS = Code("RG0013", SCHEME, "Units of expression")
GENES_REPORTED = Code("RG0014", SCHEME, "Genes in this report")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
YES, NO = Code("373066001", "SCT", "Yes"), Code("373067005", "SCT", "No")
Z_UNIT = Code("{z-score}", "UCUM", "z-score")
RANK_UNIT = Code("{rank}", "UCUM", "rank")


@dataclass(frozen=True)
class ModelCard:
    """What a reader must know of the model behind the numbers."""

    name: str
    version: str
    units: str  # of the predicted values, e.g. "log10(1+x) of FPKM-UQ"
    validation: str  # one line: how many genes held up in cross-validation

    @classmethod
    def from_card(cls, card) -> "ModelCard":
        """From a bundle's card (`RadioGenomicsLib.card.BundleCard`)."""
        cohort = card.training_cohort
        return cls(name=card.name,
                   version=f"RadioGenomics {card.library_version}, created {card.created}",
                   units=card.units["predicted"],
                   validation=f"{card.validation_text()}; trained on "
                              f"{cohort.get('name', 'an unnamed cohort')} "
                              f"({cohort.get('patients', '?')} patients)")


def unit_code(units: str) -> Code:
    """The bundle's units as a UCUM annotation ({...}: a dimensionless, named quantity)."""
    return Code("{" + re.sub(r"[^!-z|~]|[{}]", "_", units) + "}", "UCUM", units[:64])


# ---------------------------------------------------------------- the source series


def read_source_series(folder: str | os.PathLike, grid: sitk.Image,
                       series: str | None = None) -> list[pydicom.Dataset]:
    """The headers of the DICOM series `grid` was read from, one per grid plane, in order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a DICOM series folder: DICOM output needs a study "
                                 "whose images were read from DICOM")
    uid, _, files = choose_dicom_series(folder, series)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for header, file in zip(headers, files):
        missing = [k for k in ("StudyInstanceUID", "FrameOfReferenceUID", "ImagePositionPatient",
                               "ImageOrientationPatient", "PatientID") if k not in header]
        if missing:
            raise InputError(file, f"lacks {', '.join(missing)}, which DICOM output copies")
        if int(header.get("NumberOfFrames", 1)) != 1:
            raise InputError(file, "is a multi-frame image; DICOM output needs single-frame "
                                   "source slices")
    planes: dict[int, pydicom.Dataset] = {}
    for header, file in zip(headers, files):
        position = [float(v) for v in header.ImagePositionPatient]
        index = np.asarray(grid.TransformPhysicalPointToContinuousIndex(position))
        plane = int(round(index[2]))
        on_grid = np.asarray(grid.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, plane)))
        if np.linalg.norm(on_grid - position) > PLANE_TOLERANCE_MM or plane in planes:
            raise InputError(file, f"series {uid}: this slice does not lie on a plane of the "
                                   "study's grid (was the study read from another series?)")
        planes[plane] = header
    if sorted(planes) != list(range(grid.GetDepth())):
        raise InputError(folder, f"series {uid} has {len(planes)} slices on the study's grid "
                                 f"of {grid.GetDepth()} planes")
    return [planes[k] for k in range(grid.GetDepth())]


def _check_on_grid(image: sitk.Image, grid: sitk.Image, what: str) -> None:
    if not same_grid(image, grid):
        raise ValueError(f"{what} is not on the source series' grid")


def _device(card: ModelCard) -> dict:
    """Equipment attributes every object carries: this software, this model."""
    return {"manufacturer": MANUFACTURER, "manufacturer_model_name": card.name[:64],
            "software_versions": __version__, "device_serial_number": "none"}


def _algorithm(card: ModelCard) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=MANUFACTURER, version=__version__, family=codes.cid7162.ArtificialIntelligence,
        parameters={"bundle": card.name[:64], "bundle version": card.version[:64]})


# ---------------------------------------------------------------- SEG and Parametric Maps


def tumour_segmentation(sources: Sequence[pydicom.Dataset], tumour: sitk.Image,
                        card: ModelCard) -> hd.seg.Segmentation:
    """The tumour mask (on the sources' grid) as a binary DICOM SEG with one segment."""
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        # the user's segmentation, carried onto the source grid by RadioGenomics
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=_algorithm(card),
        tracking_uid=hd.UID(), tracking_id="Tumour")
    mask = (sitk.GetArrayFromImage(tumour) > 0).astype(np.uint8)  # (planes, rows, columns)
    return hd.seg.Segmentation(
        source_images=list(sources), pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(),
        series_number=SEG_SERIES, sop_instance_uid=hd.UID(), instance_number=1,
        series_description="RadioGenomics tumour", content_label="TUMOUR",
        content_description=NOTICE[:64], **_device(card))


def parametric_map(sources: Sequence[pydicom.Dataset], values: sitk.Image, symbol: str,
                   gene_id: str, card: ModelCard, series_number: int) -> hd.pm.ParametricMap:
    """A gene map (float, on the sources' grid) as a Parametric Map of the planes it covers.

    Planes where the map is zero everywhere (outside the tumour's slabs) are left out;
    the stored floats are the values, mapped 1:1 to the bundle's units.
    """
    array = sitk.GetArrayFromImage(values).astype(np.float32)  # (planes, rows, columns)
    painted = np.flatnonzero(np.abs(array).reshape(len(array), -1).max(axis=1) > 0)
    first, last = (painted[0], painted[-1]) if painted.size else (0, len(array) - 1)
    planes = range(first, last + 1)
    frames = array[first:last + 1]
    low, high = float(frames.min()), float(frames.max())
    label = symbol or gene_id
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=label[:16], lut_explanation=f"{label} {gene_id} predicted expression"[:64],
        unit=unit_code(card.units), value_range=(low, high if high > low else low + 1.0),
        slope=1.0, intercept=0.0)
    centre, width = (low + high) / 2, max(high - low, 1e-6)
    parametric = hd.pm.ParametricMap(
        source_images=list(sources), pixel_array=frames, series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=centre,
                                                         window_width=width)],
        plane_positions=[hd.PlanePositionSequence(
            hd.CoordinateSystemNames.PATIENT, sources[k].ImagePositionPatient) for k in planes],
        series_description=f"RadioGenomics {label} map"[:64], content_label=_cs(label),
        content_description=f"{label} {gene_id} predicted, {card.units}"[:64],
        **_device(card))
    parametric.Laterality = None  # type 2C: unknown, as the source does not say
    return parametric


def _cs(text: str) -> str:
    """A DICOM code string: upper case letters, digits, space and underscore, 16 at most."""
    return re.sub(r"[^A-Z0-9 _]", "_", text.upper())[:16] or "MAP"


# ---------------------------------------------------------------- structured report


def _gene_entry(row, unit: Code) -> hd.sr.ContainerContentItem:
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    entry = hd.sr.ContainerContentItem(GENE_ENTRY, relationship_type=contains)
    entry.ContentSequence = [
        hd.sr.NumContentItem(RANK, int(row.rank), RANK_UNIT, relationship_type=contains),
        hd.sr.TextContentItem(GENE_SYMBOL, row.gene_name or "-", relationship_type=contains),
        hd.sr.TextContentItem(ENSEMBL_ID, row.gene_id, relationship_type=contains),
        hd.sr.NumContentItem(PREDICTED, float(row.predicted), unit, relationship_type=contains),
        hd.sr.NumContentItem(LOWER, float(row.lower), unit, relationship_type=contains),
        hd.sr.NumContentItem(UPPER, float(row.upper), unit, relationship_type=contains),
        hd.sr.NumContentItem(COHORT_Z, float(row.cohort_z), Z_UNIT, relationship_type=contains),
        hd.sr.CodeContentItem(RELIABLE, YES if row.reliable else NO, relationship_type=contains),
    ]
    return entry


def report_rows(table: pd.DataFrame, limit: int | None,
                markers: Sequence[str] = MARKER_GENES) -> tuple[pd.DataFrame, str]:
    """The genes the SR holds and a line saying which: all, or the `limit` highest ranked
    and the markers (a genome-wide SR takes minutes to write and no viewer lists it)."""
    if limit is None or len(table) <= limit:
        return table, f"all {len(table)} genes of the model"
    rows = table[(np.arange(len(table)) < limit) | table["gene_name"].isin(markers)]
    return rows, (f"{len(rows)} of {len(table)} genes: the {limit} highest ranked against "
                  "the training cohort and the marker genes")


def gene_report(sources: Sequence[pydicom.Dataset], table: pd.DataFrame, card: ModelCard,
                limit: int | None = None,
                markers: Sequence[str] = MARKER_GENES) -> hd.sr.ComprehensiveSR:
    """The ranked gene table as a Comprehensive SR: the model card, the notice, one
    container per gene (rank, symbol, Ensembl id, value, interval, cohort z, reliable);
    with `limit`, only the highest ranked genes and the markers."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    rows, which = report_rows(table, limit, markers)
    root = hd.sr.ContainerContentItem(REPORT_TITLE)
    root.ContentSequence = [
        hd.sr.TextContentItem(USE_NOTICE, NOTICE, relationship_type=contains),
        hd.sr.TextContentItem(ALGORITHM_NAME, card.name, relationship_type=contains),
        hd.sr.TextContentItem(ALGORITHM_VERSION, card.version, relationship_type=contains),
        hd.sr.TextContentItem(UNITS, card.units, relationship_type=contains),
        hd.sr.TextContentItem(VALIDATION, card.validation, relationship_type=contains),
        hd.sr.TextContentItem(GENES_REPORTED, which, relationship_type=contains),
    ]
    report = hd.sr.ComprehensiveSR(
        evidence=list(sources), content=root, series_instance_uid=hd.UID(),
        series_number=SR_SERIES, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True,
        series_description="RadioGenomics gene report")
    # the gene entries join the tree after highdicom checked and copied its head: its
    # constructor copies and re-parses the whole tree, ~15 ms a gene (minutes for a
    # genome-wide bundle); each entry is still built and checked by highdicom
    unit = unit_code(card.units)
    report.ContentSequence.extend(_gene_entry(row, unit) for row in rows.itertuples())
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "RadioGenomics report concepts"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    report.CodingSchemeIdentificationSequence = [scheme]
    return report


# ---------------------------------------------------------------- the page for people


def _patient_lines(header: pydicom.Dataset) -> list[str]:
    def get(keyword: str) -> str:
        return str(header.get(keyword, "") or "-")

    return [f"Patient: {get('PatientName')}   ID: {get('PatientID')}   born: "
            f"{get('PatientBirthDate')}   sex: {get('PatientSex')}",
            f"Study: {get('StudyDate')}   accession: {get('AccessionNumber')}   "
            f"series: {get('Modality')} {get('SeriesDescription')}",
            f"Study Instance UID: {get('StudyInstanceUID')}"]


def _gene_lines(rows: pd.DataFrame) -> list[str]:
    lines = [f"{'rank':>4}  {'gene':<10} {'predicted':>9}  {'interval':<17} {'z':>6}  validated"]
    for row in rows.itertuples():
        lines.append(f"{row.rank:>4}  {(row.gene_name or row.gene_id)[:10]:<10} "
                     f"{row.predicted:>9.3f}  [{row.lower:6.3f}, {row.upper:6.3f}] "
                     f"{row.cohort_z:>+6.2f}  {'yes' if row.reliable else 'no'}")
    return lines


def _montage_planes(tumour: np.ndarray, count: int = 6) -> list[int]:
    planes = np.flatnonzero(tumour.any(axis=(1, 2)))
    if planes.size <= count:
        return planes.tolist()
    return planes[np.linspace(0, planes.size - 1, count).round().astype(int)].tolist()


def report_page(sources: Sequence[pydicom.Dataset], image: sitk.Image, tumour: sitk.Image,
                table: pd.DataFrame, card: ModelCard, gene: str | None = None,
                gene_map: sitk.Image | None = None, markers: Sequence[str] = MARKER_GENES,
                top: int = 12):
    """One A4 page (a matplotlib Figure): identifiers, top genes, markers, a montage of
    the tumour slices with `gene`'s map inside the tumour, the model card, the notice."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.27, 11.69), dpi=100)
    text = dict(family="monospace", fontsize=7.5, va="top")
    figure.text(0.05, 0.975, "RadioGenomics: predicted tumour gene expression",
                fontsize=14, weight="bold", va="top")
    figure.text(0.05, 0.950, NOTICE.upper(), color="#b00020", fontsize=9.5, weight="bold",
                va="top")
    figure.text(0.05, 0.925, "\n".join(_patient_lines(sources[0])), **text)
    figure.text(0.05, 0.875, f"Top {top} genes against the training cohort ({card.units}):\n"
                + "\n".join(_gene_lines(table.head(top))), **text)
    marker_rows = table[table["gene_name"].isin(markers)]
    figure.text(0.05, 0.665, "Marker genes:\n" + ("\n".join(_gene_lines(marker_rows))
                                                   if len(marker_rows) else "none in this model"),
                **text)
    # shown as radiologists read axial slices: anterior up, the patient's left on the right
    def shown_as(volume: sitk.Image) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.DICOMOrient(volume, "LPS"))

    tumour_array = shown_as(tumour) > 0
    intensities = shown_as(image)
    values = None if gene_map is None else shown_as(gene_map)
    planes = _montage_planes(tumour_array)
    spacing = sitk.DICOMOrient(image, "LPS").GetSpacing()
    shown = None
    low, high = ((float(values[tumour_array].min()), float(values[tumour_array].max()))
                 if values is not None else (0.0, 1.0))
    for i, plane in enumerate(planes):
        axes = figure.add_axes((0.05 + (i % 3) * 0.3, 0.40 - (i // 3) * 0.2, 0.28, 0.19))
        gray = intensities[plane]
        axes.imshow(gray, cmap="gray", vmin=np.percentile(gray, 1), vmax=np.percentile(gray, 99),
                    aspect=spacing[1] / spacing[0])
        if values is not None:
            shown = axes.imshow(np.ma.masked_where(~tumour_array[plane], values[plane]),
                                cmap="inferno", vmin=low, vmax=high if high > low else low + 1,
                                alpha=0.75, aspect=spacing[1] / spacing[0])
        axes.contour(tumour_array[plane], levels=[0.5], colors="#00c0ff", linewidths=0.6)
        axes.set_title(f"slice {plane + 1}", fontsize=7)
        axes.set_axis_off()
    title = f"{gene} map inside the tumour" if values is not None else "tumour outline"
    figure.text(0.05, 0.615, f"Tumour slices: {title}", fontsize=9, weight="bold", va="top")
    if shown is not None:
        bar = figure.colorbar(shown, cax=figure.add_axes((0.93, 0.22, 0.015, 0.36)))
        bar.set_label(f"{gene} ({card.units})", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    figure.text(0.05, 0.17, "\n".join([
        f"Model: {card.name}   version: {card.version}",
        f"Values: {card.units}; interval: range of the fold models; z: against the "
        "training cohort",
        f"Validation: {card.validation}",
        f"Software: {MANUFACTURER} {__version__}",
        NOTICE]), wrap=True, **text)
    return figure


def _render(figure) -> tuple[bytes, np.ndarray]:
    """The page as PDF bytes and as an RGB image (for the Secondary Capture)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    pdf = io.BytesIO()
    figure.savefig(pdf, format="pdf")
    canvas.draw()
    return pdf.getvalue(), np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def secondary_capture(sources: Sequence[pydicom.Dataset], rgb: np.ndarray,
                      card: ModelCard) -> hd.sc.SCImage:
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=sources[0], pixel_array=rgb, photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=hd.UID(), series_number=SC_SERIES, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, patient_orientation=("L", "P"),
        series_description="RadioGenomics report (research use only)")
    # a page of text has no orientation: highdicom needs one, the IOD allows it empty
    capture.PatientOrientation = None
    capture.Laterality = None  # type 2C: unknown, as the source does not say
    return capture


# ---------------------------------------------------------------- everything at once


def _gene_row(table: pd.DataFrame, name: str) -> pd.Series:
    rows = table[(table["gene_name"] == name) | (table["gene_id"] == name)]
    if rows.empty:
        raise ValueError(f"the map of {name!r} has no row in the gene table")
    return rows.iloc[0]


def map_file_name(symbol: str) -> str:
    return "map_" + re.sub(r"[^A-Za-z0-9._-]", "_", symbol) + ".dcm"


def export_study(out: str | os.PathLike, source: str | os.PathLike, tumour: sitk.Image,
                 maps: Mapping[str, sitk.Image], table: pd.DataFrame, card: ModelCard,
                 series: str | None = None, report_gene: str | None = None,
                 markers: Sequence[str] = MARKER_GENES,
                 sr_genes: int | None = SR_GENES) -> list[Path]:
    """Write every object into the folder `out` (all of them or nothing).

    source: the DICOM folder (and `series` in it) the study's grid was read from; tumour
    and maps (gene symbol or id -> volume) lie on that grid; table: the ranked gene table.
    The page's montage shows `report_gene`'s map (default: the first map). The SR holds
    every gene, or with `sr_genes` the highest ranked ones and the markers.
    """
    from RadioGenomicsLib.imaging import read_volume
    from RadioGenomicsLib.progress import progress

    image = read_volume(source, series) if Path(source).is_dir() else None
    if image is None:
        raise InputError(source, "is not a DICOM series folder: DICOM output needs a study "
                                 "whose images were read from DICOM")
    sources = read_source_series(source, image, series)
    _check_on_grid(tumour, image, "the tumour mask")
    for name, volume in maps.items():
        _check_on_grid(volume, image, f"the map of {name}")
    report_gene = report_gene or next(iter(maps), None)
    objects: dict[str, pydicom.Dataset] = {}
    steps = ["seg", *maps, "sr", "page"]
    for step in progress(steps, "DICOM objects"):
        if step == "seg":
            objects["seg.dcm"] = tumour_segmentation(sources, tumour, card)
        elif step == "sr":
            objects["report_sr.dcm"] = gene_report(sources, table, card, sr_genes, markers)
        elif step == "page":
            page = report_page(sources, image, tumour, table, card, report_gene,
                               maps.get(report_gene) if report_gene else None, markers)
            pdf, rgb = _render(page)
            objects["report_sc.dcm"] = secondary_capture(sources, rgb, card)
        else:
            row = _gene_row(table, step)
            objects[map_file_name(row["gene_name"] or row["gene_id"])] = parametric_map(
                sources, maps[step], row["gene_name"], row["gene_id"], card,
                MAP_SERIES + len(objects) - 1)
    with atomic_path(out) as folder:
        folder.mkdir()
        for name, dataset in objects.items():
            dataset.save_as(folder / name, enforce_file_format=True)
        (folder / "report.pdf").write_bytes(pdf)
        mark_complete(folder, "export-dicom")  # last: outputs.py lets a later export replace it
    return [Path(out) / name for name in [*objects, "report.pdf"]]


def export_run(run, bundle, out: str | os.PathLike, genes: Sequence[str] = (),
               sr_genes: int | None = SR_GENES) -> list[Path]:
    """Everything from a prediction run (`RadioGenomicsLib.run`) whose first channel was
    read from DICOM: its tumour mask, the maps of `genes` drawn from its tokens, its table.
    Refused when the source series changed since the run (its sha256 differs)."""
    from RadioGenomicsLib.hashing import sha256_of_input
    from RadioGenomicsLib.run import run_maps

    source = run.info["inputs"]["images"][run.info["channels"][0]]
    path = Path(source["path"])
    if not path.is_dir():
        raise InputError(path, "is not a DICOM series folder: DICOM output needs a study "
                               "whose images were read from DICOM")
    if sha256_of_input(path) != source["sha256"]:
        raise InputError(path, f"changed since the prediction run {run.path}: predict again")
    maps = run_maps(run, bundle, list(genes)) if genes else {}
    return export_study(out, path, run.tumour, maps, run.table,
                        ModelCard.from_card(bundle.card), series=source.get("series"),
                        markers=run.markers, sr_genes=sr_genes)
