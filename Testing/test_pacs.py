"""`radiogenomics predict --pacs ... --send` and `export-dicom` against a real Orthanc
(Debian's orthanc + orthanc-dicomweb), with an untrained bundle on a DICOM CT series."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from RadioGenomicsLib.outputs import COMPLETE_MARKER
from RadioGenomicsLib.bundle import make_untrained_bundle
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import read_volume
from RadioGenomicsLib.model import ModelConfig
from RadioGenomicsLib.pacs import (CREDENTIALS_FILE_ENV, PASSWORD_ENV, USER_ENV,
                                   list_studies, read_credentials, store)
from RadioGenomicsLib.preprocess import PreprocessSettings
from Testing.dicom_series import (dciodvfy_errors, sphere, write_ct_series,
                                  write_workstation_seg)
from Testing.orthanc import PASSWORD, USER, free_port, running_orthanc

GENES = 12


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}.1" for i in range(GENES)],
                          "gene_name": ["EGFR", "TP53", "KRAS"] + [f"GENE{i}" for i in
                                                                  range(3, GENES)],
                          "train_mean": np.linspace(1.0, 2.0, GENES), "train_std": 0.5,
                          "validation_r": 0.4, "validation_p_adj": 0.01})
    return make_untrained_bundle(tmp_path_factory.mktemp("bundle") / "ct_tiny",
                                 ModelConfig.preset("small"), ["ct"], genes,
                                 PreprocessSettings(max_slices=4).to_dict(), seed=1, folds=2)


@pytest.fixture(scope="module")
def study(tmp_path_factory, slicerio_data):
    """slicerio's chest CT as a DICOM series, and a ball tumour (NRRD) on its grid."""
    root = tmp_path_factory.mktemp("study")
    uids = write_ct_series(sitk.ReadImage(str(slicerio_data / "CTChest4.nrrd")), root / "ct")
    tumour = sphere(read_volume(root / "ct"), 25.0)
    sitk.WriteImage(tumour, str(root / "tumour.nrrd"))
    write_workstation_seg(root / "ct", tumour, root / "contour.dcm")
    return {"folder": root / "ct", "tumour": root / "tumour.nrrd", "seg": root / "contour.dcm",
            **uids}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, study):
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        server.upload([*sorted(study["folder"].iterdir()), study["seg"]])
        yield server


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.delenv(CREDENTIALS_FILE_ENV, raising=False)


@pytest.fixture(scope="module")
def sent(tmp_path_factory, bundle, study, orthanc):
    """One `predict --pacs --send` run, shared by the tests that read its results."""
    from RadioGenomicsLib.cli import main

    out = tmp_path_factory.mktemp("sent")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(USER_ENV, USER)
        patch.setenv(PASSWORD_ENV, PASSWORD)
        code = main(["predict", "--model", str(bundle.path), "--pacs", orthanc.dicomweb,
                     "--study-uid", study["study"],  # the tumour: the study's own SEG
                     "--out", str(out / "genes.csv"), "--map-gene", "EGFR",
                     "--maps", str(out / "maps"), "--send", "--device", "cpu"])
    assert code == 0
    return out


def _from_orthanc(orthanc, study_uid: str) -> dict[str, pydicom.Dataset]:
    """Every instance Orthanc holds in the study, by SOP Instance UID."""
    found = {}
    for series in orthanc.get("/series?expand").json():
        for instance in series["Instances"]:
            dataset = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{instance}/file").content))
            if dataset.StudyInstanceUID == study_uid:
                found[dataset.SOPInstanceUID] = dataset
    return found


def test_list_studies(orthanc, study, credentials):
    studies = {s.uid: s for s in list_studies(orthanc.dicomweb)}
    listed = studies[study["study"]]
    assert (listed.patient_id, listed.patient_name) == ("RG-TEST-0001", "Test^Patient")
    assert listed.date == "20260102" and "CT" in listed.modalities.split("/")


def test_predict_from_the_pacs_stores_every_result(sent, orthanc, study):
    local = {pydicom.dcmread(p).SOPInstanceUID: p.name for p in (sent / "genes.dicom").iterdir()
             if p.suffix == ".dcm"}
    assert sorted(local.values()) == ["map_EGFR.dcm", "report_sc.dcm", "report_sr.dcm",
                                      "seg.dcm"]
    held = _from_orthanc(orthanc, study["study"])
    assert set(local) <= set(held)
    modalities = sorted(held[uid].Modality for uid in local)
    assert modalities == ["OT", "OT", "SEG", "SR"]
    # the study fetched over DICOMweb is the one uploaded, slice for slice, and its SEG
    # (not ours) was the tumour
    fetched = {pydicom.dcmread(p).SOPInstanceUID for p in (sent / "genes.study").glob("*.dcm")}
    assert fetched == {pydicom.dcmread(p).SOPInstanceUID for p in study["folder"].iterdir()}
    run_tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(sent / "genes.run" / "tumour.nrrd")))
    drawn = sitk.GetArrayFromImage(sitk.ReadImage(str(study["tumour"])))
    np.testing.assert_array_equal(run_tumour, drawn)


def test_the_stored_map_and_report_equal_the_local_results(sent, orthanc, study):
    held = {d.SeriesDescription: d for d in _from_orthanc(orthanc, study["study"]).values()}
    table = pd.read_csv(sent / "genes.csv")
    report = held["RadioGenomics gene report"]
    entries = [item for item in report.ContentSequence if item.ValueType == "CONTAINER"]
    assert len(entries) == len(table)
    for entry, row in zip(entries, table.itertuples()):
        values = {c.ConceptNameCodeSequence[0].CodeMeaning: c for c in entry.ContentSequence}
        assert values["Gene symbol"].TextValue == row.gene_name
        predicted = float(values["Predicted expression"].MeasuredValueSequence[0].NumericValue)
        # genes.csv keeps 6 significant digits; the SR the float itself
        assert predicted == pytest.approx(row.predicted, rel=1e-5)
    parametric = held["RadioGenomics EGFR map"]
    mapping = parametric.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    nrrd = sitk.ReadImage(str(sent / "maps" / "EGFR.nrrd"))
    values = sitk.GetArrayFromImage(nrrd)
    frames = parametric.pixel_array * float(mapping.RealWorldValueSlope) + \
        float(mapping.RealWorldValueIntercept)
    for item, frame in zip(parametric.PerFrameFunctionalGroupsSequence, frames):
        position = item.PlanePositionSequence[0].ImagePositionPatient
        index = nrrd.TransformPhysicalPointToContinuousIndex([float(v) for v in position])
        np.testing.assert_allclose(index[:2], [0, 0], atol=1e-3)
        np.testing.assert_allclose(frame, values[int(round(index[2]))], atol=1e-4)


def test_export_dicom_from_the_run(sent, run_cli, tmp_path):
    code, stdout, stderr = run_cli("export-dicom", "--run", sent / "genes.run", "--out",
                                   tmp_path / "dicom", "--gene", "TP53", "--gene", "KRAS")
    assert code == 0, stderr
    assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == [
        COMPLETE_MARKER, "map_KRAS.dcm", "map_TP53.dcm", "report.pdf", "report_sc.dcm",
        "report_sr.dcm", "seg.dcm"]
    for path in (tmp_path / "dicom").glob("*.dcm"):  # the model's own maps, not made up
        assert dciodvfy_errors(path) == [], path.name
    seg = pydicom.dcmread(tmp_path / "dicom" / "seg.dcm")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(sent / "genes.run" / "tumour.nrrd")))
    assert seg.NumberOfFrames == int(mask.any(axis=(1, 2)).sum())


def test_export_dicom_refuses_a_changed_source(sent, run_cli, tmp_path):
    import shutil

    run = tmp_path / "genes.run"
    shutil.copytree(sent / "genes.run", run)
    study = tmp_path / "study"
    shutil.copytree(sent / "genes.study", study)
    info = (run / "run.json").read_text().replace(str((sent / "genes.study").resolve()),
                                                 str(study.resolve()))
    (run / "run.json").write_text(info)
    victim = next(study.iterdir())
    victim.write_bytes(victim.read_bytes()[:-2] + b"\x00\x01")
    code, _, stderr = run_cli("export-dicom", "--run", run, "--out", tmp_path / "dicom")
    assert code == 2 and "changed since the prediction run" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "dicom").exists()


@pytest.mark.parametrize("case, message", [
    ("unknown_study", "no study 1.2.826.0.1.3680043.8.498.999 on this server"),
    ("down", "cannot connect (server down or refusing connections)"),
    ("wrong_password", "the server refused with HTTP 401"),
    ("url_credentials", "no credentials in the URL"),
])
def test_pacs_problems_exit_2_with_one_line(case, message, bundle, study, orthanc, run_cli,
                                            tmp_path, credentials, monkeypatch):
    url, study_uid = orthanc.dicomweb, study["study"]
    if case == "unknown_study":
        study_uid = "1.2.826.0.1.3680043.8.498.999"
    elif case == "down":
        url = f"http://127.0.0.1:{free_port()}/dicom-web"
    elif case == "wrong_password":
        monkeypatch.setenv(PASSWORD_ENV, "guess")
    elif case == "url_credentials":
        url = url.replace("http://", f"http://{USER}:{PASSWORD}@")
    code, stdout, stderr = run_cli("predict", "--model", bundle.path, "--pacs", url,
                                   "--study-uid", study_uid, "--segmentation", study["tumour"],
                                   "--out", tmp_path / "genes.csv", "--send", "--device", "cpu")
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert PASSWORD not in stdout + stderr
    assert sorted(os.listdir(tmp_path)) == []  # nothing written, nothing fetched


def test_a_study_without_a_segmentation_needs_one(bundle, study, orthanc, run_cli, tmp_path,
                                                 credentials, slicerio_data):
    other = write_ct_series(sitk.ReadImage(str(slicerio_data / "CTChest4.nrrd")),
                            tmp_path / "other")
    orthanc.upload(sorted((tmp_path / "other").iterdir()))
    code, _, stderr = run_cli("predict", "--model", bundle.path, "--pacs", orthanc.dicomweb,
                              "--study-uid", other["study"], "--out", tmp_path / "genes.csv",
                              "--device", "cpu")
    assert code == 2 and "the study holds no DICOM SEG of the tumour" in stderr
    assert not (tmp_path / "genes.csv").exists() and not (tmp_path / "genes.run").exists()


def test_dicom_output_of_a_nrrd_study_is_refused_before_the_work(bundle, study, run_cli,
                                                                 tmp_path):
    sitk.WriteImage(read_volume(study["folder"]), str(tmp_path / "ct.nrrd"))
    code, _, stderr = run_cli("predict", "--model", bundle.path, "--image",
                              f"ct={tmp_path / 'ct.nrrd'}", "--segmentation", study["tumour"],
                              "--out", tmp_path / "out" / "genes.csv", "--dicom-out",
                              tmp_path / "out" / "dicom", "--device", "cpu")
    assert code == 2 and "ct.nrrd: is not a DICOM series folder" in stderr
    assert not (tmp_path / "out").exists()
    # and a run of that study cannot be exported later either
    code, _, _ = run_cli("predict", "--model", bundle.path, "--image",
                         f"ct={tmp_path / 'ct.nrrd'}", "--segmentation", study["tumour"],
                         "--out", tmp_path / "out" / "genes.csv", "--device", "cpu",
                         "--folds", "first")
    assert code == 0
    code, _, stderr = run_cli("export-dicom", "--run", tmp_path / "out" / "genes.run",
                              "--out", tmp_path / "dicom")
    assert code == 2 and "ct.nrrd: is not a DICOM series folder" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "dicom").exists()


def test_a_refused_result_is_named_and_the_rest_reported_stored(tmp_path, sent, credentials):
    """An Orthanc whose filter refuses SR: the message names what was stored and what not."""
    script = tmp_path / "refuse_sr.lua"
    script.write_text("function ReceivedInstanceFilter(dicom, origin, info)\n"
                      "  return dicom.Modality ~= 'SR'\nend\n")
    files = sorted(p for p in (sent / "genes.dicom").iterdir() if p.suffix == ".dcm")
    with running_orthanc(tmp_path / "orthanc", lua_scripts=[script]) as refusing:
        with pytest.raises(InputError) as error:
            store(refusing.dicomweb, files)
        held = {s["MainDicomTags"]["Modality"] for s in refusing.get("/series?expand").json()}
    assert "stored: map_EGFR.dcm, report_sc.dcm, seg.dcm; not stored: report_sr.dcm" in str(error.value)
    assert held == {"OT", "SEG"}


def test_credentials_file_must_be_private(tmp_path, monkeypatch):
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    file = tmp_path / "pacs.credentials"
    file.write_text("radiologist:s3cret\n")
    monkeypatch.setenv(CREDENTIALS_FILE_ENV, str(file))
    file.chmod(0o644)
    with pytest.raises(InputError, match=r"other users may read.*mode 0644.*chmod 600"):
        read_credentials()
    file.chmod(0o600)
    assert read_credentials() == ("radiologist", "s3cret")
    file.write_text("just-a-password\n")
    with pytest.raises(InputError, match="one line user:password"):
        read_credentials()
    monkeypatch.setenv(USER_ENV, "someone")
    with pytest.raises(InputError, match="set both"):
        read_credentials()
