"""DICOM results (SEG, Parametric Map, SR, PDF + Secondary Capture) from a real CT series,
read back with highdicom/pydicom and checked with dciodvfy (Debian's dicom3tools)."""

from __future__ import annotations

import re

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from RadioGenomicsLib.outputs import COMPLETE_MARKER
from RadioGenomicsLib import __version__
from RadioGenomicsLib.dicom_export import (NOTICE, ModelCard, export_study, gene_report,
                                           read_source_series)
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import read_segmentation, read_volume
from Testing.dicom_series import PATIENT, dciodvfy_errors, sphere, write_ct_series

GENES = 25
CARD = ModelCard("ct_small", "0.1.0 (2026-12-02)", "log10(1+x) of FPKM-UQ",
                 "3 of 25 genes validated (Holm-Sidak p < 0.05, r > 0)")


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    predicted = np.sort(rng.uniform(0.5, 3.0, GENES))[::-1]
    return pd.DataFrame({
        "rank": np.arange(1, GENES + 1), "gene_id": [f"ENSG{i:011d}.3" for i in range(GENES)],
        "gene_name": ["EGFR", "TP53", "KRAS"] + [f"GENE{i}" for i in range(3, GENES)],
        "predicted": predicted, "lower": predicted - rng.uniform(0.1, 0.5, GENES),
        "upper": predicted + rng.uniform(0.1, 0.5, GENES),
        "cohort_z": np.linspace(2.5, -2.0, GENES), "cohort_percentile": np.linspace(99, 2, GENES),
        "validation_r": 0.3, "validation_p_adj": 0.01, "reliable": np.arange(GENES) % 3 == 0})


@pytest.fixture(scope="module")
def exported(tmp_path_factory, slicerio_data):
    """slicerio's chest CT as a DICOM series, a ball tumour, two gene maps, exported once."""
    root = tmp_path_factory.mktemp("dicom_export")
    write_ct_series(sitk.ReadImage(str(slicerio_data / "CTChest4.nrrd")), root / "ct")
    grid = read_volume(root / "ct")
    tumour = sphere(grid, 30.0)
    z, y, x = np.indices(sitk.GetArrayViewFromImage(grid).shape)
    planes = sitk.GetArrayFromImage(tumour).any(axis=(1, 2))
    maps = {}
    for symbol, scale in (("EGFR", 0.01), ("ENSG00000000007.3", -0.02)):
        values = np.where(planes[:, None, None], 1.5 + scale * x - 0.003 * y + 0.05 * z, 0.0)
        maps[symbol] = sitk.GetImageFromArray(values.astype(np.float32))
        maps[symbol].CopyInformation(grid)
    table = _table()
    files = export_study(root / "out", root / "ct", tumour, maps, table, CARD)
    sources = [pydicom.dcmread(f) for f in sorted((root / "ct").iterdir())]
    return {"root": root, "files": files, "grid": grid, "tumour": tumour, "maps": maps,
            "table": table, "sources": sources}


def _plane_of(position, sources) -> int:
    """Index (on the grid) of the source slice at `position`, within 1e-3 mm."""
    distances = [np.linalg.norm(np.asarray(s.ImagePositionPatient, float) - np.asarray(position, float))
                 for s in sources]
    assert min(distances) < 1e-3, f"frame at {position} is on no source slice"
    return int(sources[int(np.argmin(distances))].InstanceNumber) - 1


def _frames(dataset) -> list:
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    return [(f.PlanePositionSequence[0].ImagePositionPatient, orientation)
            for f in dataset.PerFrameFunctionalGroupsSequence]


def test_files_written(exported):
    assert sorted(p.name for p in (exported["root"] / "out").iterdir()) == sorted(
        ["seg.dcm", "map_EGFR.dcm", "map_GENE7.dcm", "report_sr.dcm", "report_sc.dcm",
         "report.pdf", COMPLETE_MARKER])


def test_seg_frames_lie_on_the_source_slices(exported):
    seg = hd.seg.segread(exported["root"] / "out" / "seg.dcm")
    sources, mask = exported["sources"], sitk.GetArrayFromImage(exported["tumour"])
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Tumour"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # neoplasm
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("RadioGenomics", __version__)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    pixels = seg.pixel_array.reshape(-1, *mask.shape[1:])
    covered = []
    for (position, orientation), frame in zip(_frames(seg), pixels):
        np.testing.assert_allclose(orientation, sources[0].ImageOrientationPatient, atol=1e-6)
        plane = _plane_of(position, sources)
        np.testing.assert_array_equal(frame, mask[plane])
        covered.append(plane)
    assert sorted(covered) == np.flatnonzero(mask.any(axis=(1, 2))).tolist()


def test_the_seg_reads_back_as_the_tumour(exported):
    """A DICOM SEG is also an input segmentation (imaging.read_segmentation)."""
    seg = exported["root"] / "out" / "seg.dcm"
    mask = read_segmentation(seg, exported["grid"], segment="Tumour")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask),
                                  sitk.GetArrayFromImage(exported["tumour"]))
    with pytest.raises(InputError, match="no segment labelled 'Liver' .segments: Tumour."):
        read_segmentation(seg, exported["grid"], segment="Liver")


def test_parametric_map_values_and_geometry(exported):
    pm = pydicom.dcmread(exported["root"] / "out" / "map_EGFR.dcm")
    sources, values = exported["sources"], sitk.GetArrayFromImage(exported["maps"]["EGFR"])
    assert "EGFR" in pm.ContentDescription and "ENSG00000000000.3" in pm.ContentDescription
    assert pm.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeMeaning == CARD.units
    frames = pm.pixel_array.astype(np.float64) * float(mapping.RealWorldValueSlope) + \
        float(mapping.RealWorldValueIntercept)
    covered = []
    for (position, orientation), frame in zip(_frames(pm), frames):
        np.testing.assert_allclose(orientation, sources[0].ImageOrientationPatient, atol=1e-6)
        plane = _plane_of(position, sources)
        np.testing.assert_allclose(frame, values[plane], atol=1e-4)
        covered.append(plane)
    # the planes the map paints, no others
    assert sorted(covered) == np.flatnonzero(np.abs(values).sum(axis=(1, 2)) > 0).tolist()
    pixel = pm.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    np.testing.assert_allclose(pixel, sources[0].PixelSpacing, atol=1e-6)


def _sr_entries(report) -> tuple[dict, list[dict]]:
    """(the report's top-level texts, one dict per gene entry), keyed by concept meaning."""
    def value(item):
        kind = item.ValueType
        if kind == "NUM":
            return float(item.MeasuredValueSequence[0].NumericValue)
        if kind == "CODE":
            return item.ConceptCodeSequence[0].CodeMeaning
        return item.TextValue

    texts, genes = {}, []
    for item in report.ContentSequence:
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "CONTAINER":
            genes.append({c.ConceptNameCodeSequence[0].CodeMeaning: value(c)
                          for c in item.ContentSequence})
        else:
            texts[meaning] = value(item)
    return texts, genes


def test_structured_report_values_equal_the_table(exported):
    report = pydicom.dcmread(exported["root"] / "out" / "report_sr.dcm")
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    texts, genes = _sr_entries(report)
    assert texts["Intended use"] == NOTICE
    assert (texts["Algorithm Name"], texts["Algorithm Version"]) == (CARD.name, CARD.version)
    assert texts["Model validation summary"] == CARD.validation
    table = exported["table"]
    assert len(genes) == len(table)
    for entry, row in zip(genes, table.itertuples()):
        assert entry["Rank"] == row.rank
        assert entry["Gene symbol"] == row.gene_name and entry["Ensembl gene identifier"] == row.gene_id
        for column, meaning in (("predicted", "Predicted expression"),
                                ("lower", "Prediction interval lower bound"),
                                ("upper", "Prediction interval upper bound"),
                                ("cohort_z", "Z-score against the training cohort")):
            assert entry[meaning] == pytest.approx(getattr(row, column), rel=1e-6, abs=1e-9)
        assert entry["Validated in the model's cross-validation"] == ("Yes" if row.reliable else "No")
    assert texts["Genes in this report"] == f"all {GENES} genes of the model"
    first = next(item for item in report.ContentSequence if item.ValueType == "CONTAINER")
    units = first.ContentSequence[3].MeasuredValueSequence[0]
    assert units.MeasurementUnitsCodeSequence[0].CodeMeaning == CARD.units


def test_structured_report_of_a_large_table_keeps_the_top_and_the_markers(exported):
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in
               sorted((exported["root"] / "ct").iterdir())]
    report = gene_report(sources, exported["table"], CARD, limit=5, markers=("GENE20", "MYC"))
    texts, genes = _sr_entries(report)
    assert [entry["Rank"] for entry in genes] == [1, 2, 3, 4, 5, 21]
    assert genes[-1]["Gene symbol"] == "GENE20"
    assert texts["Genes in this report"].startswith("6 of 25 genes: the 5 highest ranked")


def test_pdf_is_one_page_and_its_capture_carries_the_patient(exported):
    pdf = (exported["root"] / "out" / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) == 1
    capture = pydicom.dcmread(exported["root"] / "out" / "report_sc.dcm")
    for key, value in PATIENT.items():
        assert str(capture[key].value) == value
    assert capture.StudyInstanceUID == exported["sources"][0].StudyInstanceUID
    rgb = capture.pixel_array
    assert rgb.shape == (1169, 827, 3)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red[:120].sum() > 300  # the research-use notice in the page's head
    assert (rgb.std(axis=-1) > 30)[400:950].sum() > 2000  # the coloured map montage


def test_new_uids_copied_study_and_nothing_else_carried(exported):
    sources = exported["sources"]
    source_uids = {s.SOPInstanceUID for s in sources} | {sources[0].SeriesInstanceUID}
    series = set()
    for path in exported["files"]:
        if path.suffix != ".dcm":
            continue
        dataset = pydicom.dcmread(path)
        assert dataset.SOPInstanceUID not in source_uids
        assert dataset.SeriesInstanceUID not in source_uids
        series.add(dataset.SeriesInstanceUID)
        assert dataset.StudyInstanceUID == sources[0].StudyInstanceUID
        assert (dataset.PatientID, str(dataset.PatientName)) == (PATIENT["PatientID"],
                                                                 PATIENT["PatientName"])
        assert dataset.Manufacturer == "RadioGenomics"
        for private_to_the_source in ("KVP", "PatientPosition", "AcquisitionNumber",
                                      "RescaleType", "SliceThickness"):
            assert private_to_the_source not in dataset, (path.name, private_to_the_source)
        if dataset.Modality in ("SEG", "OT") and "FrameOfReferenceUID" in dataset:
            assert dataset.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert len(series) == 5  # one new series per object


def test_every_object_passes_dciodvfy(exported):
    for path in exported["files"]:
        if path.suffix == ".dcm":
            assert dciodvfy_errors(path) == [], path.name


def test_a_study_not_read_from_dicom_is_refused(tmp_path, exported):
    nrrd = tmp_path / "ct.nrrd"
    sitk.WriteImage(exported["grid"], str(nrrd))
    with pytest.raises(InputError, match="is not a DICOM series folder"):
        export_study(tmp_path / "out", nrrd, exported["tumour"], {}, exported["table"], CARD)
    assert not (tmp_path / "out").exists()


def test_a_series_off_the_grid_is_refused_and_nothing_written(tmp_path, exported):
    shifted = sitk.Image(exported["grid"])
    shifted.SetOrigin([v + 2.5 for v in shifted.GetOrigin()][:2] + [shifted.GetOrigin()[2] + 4])
    write_ct_series(shifted, tmp_path / "ct")
    grid = read_volume(tmp_path / "ct")
    with pytest.raises(InputError, match="does not lie on a plane of the study's grid"):
        read_source_series(tmp_path / "ct", exported["grid"])
    tumour = sitk.Image(exported["tumour"])
    tumour.CopyInformation(grid)
    # the maps lie on the other grid: nothing is written, not even the SEG
    with pytest.raises(ValueError, match="map of EGFR is not on the source series' grid"):
        export_study(tmp_path / "out", tmp_path / "ct", tumour, exported["maps"],
                     exported["table"], CARD)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
