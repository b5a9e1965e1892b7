"""Cohort manifests: BraTS-TCGA and TCIA layouts made here with tiny NIfTI files, validation."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from RadioGenomicsLib.cohort import (CohortError, read_brats, read_tcia, validate_cohort,
                                     write_manifest)
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.expression import ExpressionMatrix, write_matrix


def _nifti(path, labels: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if labels:  # BraTS labels: 1 necrosis, 2 oedema, 4 enhancing
        data = np.zeros((6, 6, 4), np.uint8)
        data[1:5, 1:5, 1:3] = 2
        data[2:4, 2:4, 1:3] = 4
        data[2, 2, 1] = 1
    else:
        data = np.arange(6 * 6 * 4, dtype=np.float32).reshape(6, 6, 4)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.5, 1.0])), path)


def _brats_patient(root, patient: str, date: str, kinds: list[str]) -> None:
    for kind in kinds:
        _nifti(root / patient / f"{patient}_{date}_{kind}.nii.gz", labels="Glistr" in kind)


@pytest.fixture
def brats(tmp_path):
    root = tmp_path / "Pre-operative_TCGA_GBM_NIfTI_and_Segmentations"
    channels = ["t1", "t1Gd", "t2", "flair"]
    _brats_patient(root, "TCGA-02-0006", "1996.08.23",
                   channels + ["GlistrBoost", "GlistrBoost_ManuallyCorrected"])
    _brats_patient(root, "TCGA-06-0122", "1998.01.15", channels + ["GlistrBoost"])
    _brats_patient(root, "TCGA-08-0509", "2000.03.02", ["t1", "t1Gd", "t2", "GlistrBoost"])
    return root


def test_brats_manifest_through_the_cli(tmp_path, run_cli, brats):
    out = tmp_path / "cohorts" / "gbm.csv"
    code, stdout, stderr = run_cli("manifest", "brats", brats, "--out", out)
    assert code == 0, stderr
    assert "patients: 2" in stdout and "TCGA-08-0509: no flair" in stdout
    assert "TCGA-06-0122: automatic GlistrBoost segmentation" in stdout
    manifest = pd.read_csv(out, dtype=str)
    assert manifest.columns.tolist() == ["patient_id", "t1", "t1gd", "t2", "flair",
                                         "segmentation"]
    assert manifest["patient_id"].tolist() == ["TCGA-02-0006", "TCGA-06-0122"]
    first = manifest.iloc[0]
    assert first["t1gd"] == os.path.join("..", brats.name, "TCGA-02-0006",
                                         "TCGA-02-0006_1996.08.23_t1Gd.nii.gz")
    assert first["segmentation"].endswith("_GlistrBoost_ManuallyCorrected.nii.gz")
    assert manifest.iloc[1]["segmentation"].endswith("TCGA-06-0122_1998.01.15_GlistrBoost.nii.gz")
    table = validate_cohort(out)
    assert table.index.tolist() == ["TCGA-02-0006", "TCGA-06-0122"]
    for column in ("t1", "t1gd", "t2", "flair", "segmentation"):
        assert all(os.path.isabs(p) and os.path.isfile(p) for p in table[column])
    labels = np.unique(np.asarray(nib.load(table.loc["TCGA-02-0006", "segmentation"]).dataobj))
    assert labels.tolist() == [0, 1, 2, 4]


def test_brats_several_studies_are_reported(brats):
    _brats_patient(brats, "TCGA-02-0006", "1997.01.02", ["t1", "t1Gd", "t2", "flair",
                                                         "GlistrBoost"])
    report = read_brats(brats)
    assert "TCGA-02-0006" not in report.table["patient_id"].tolist()
    assert report.skipped["TCGA-02-0006"] == "several studies (1996.08.23, 1997.01.02)"


def test_brats_empty_folder(tmp_path, run_cli):
    code, _, stderr = run_cli("manifest", "brats", tmp_path, "--out", tmp_path / "c.csv")
    assert code == 2 and "no BraTS-TCGA files" in stderr
    assert not (tmp_path / "c.csv").exists()


# ---------------------------------------------------------------- TCIA

SERIES = [  # subject, study, date, description, modality, images
    ("TCGA-02-0006", "1.1", "08-23-1996", "LOCALIZER", "MR", 3),
    ("TCGA-02-0006", "1.1", "08-23-1996", "AX T1", "MR", 24),
    ("TCGA-02-0006", "1.1", "08-23-1996", "AX T1 POST GD", "MR", 24),
    ("TCGA-02-0006", "1.1", "08-23-1996", "SAG MPRAGE POST", "MR", 176),
    ("TCGA-02-0006", "1.1", "08-23-1996", "AX T2 FSE", "MR", 24),
    ("TCGA-02-0006", "1.1", "08-23-1996", "AX FLAIR", "MR", 24),
    ("TCGA-02-0006", "1.2", "12-01-1996", "AX FLAIR", "MR", 24),  # a follow-up
    ("TCGA-06-0122", "2.1", "01-15-1998", "T1", "MR", 23),
    ("TCGA-06-0122", "2.1", "01-15-1998", "T1 +C", "MR", 23),
    ("TCGA-06-0122", "2.1", "01-15-1998", "T2", "MR", 23),
    ("TCGA-06-0122", "2.1", "01-15-1998", "FLAIR", "MR", 23),
    ("TCGA-08-0509", "3.1", "03-02-2000", "DWI", "MR", 40),
]


@pytest.fixture
def tcia(tmp_path):
    root = tmp_path / "manifest-1600000000000"
    rows = []
    for number, (subject, study, date, description, modality, images) in enumerate(SERIES):
        # the NBIA Data Retriever's Windows-style relative location of each series folder
        location = f".\\TCGA-GBM\\{subject}\\{date}-NA-MRI BRAIN-{study}\\{number}.000000-{description}"
        folder = root / "TCGA-GBM" / subject / f"{date}-NA-MRI BRAIN-{study}" / \
            f"{number}.000000-{description}"
        folder.mkdir(parents=True)
        (folder / "1-01.dcm").write_bytes(b"")
        rows.append({"Series UID": f"1.3.6.1.{number}", "Collection": "TCGA-GBM",
                     "Subject ID": subject, "Study UID": study, "Study Date": date,
                     "Series Description": description, "Modality": modality,
                     "Number of Images": images, "File Location": location})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    segmentations = tmp_path / "segs"
    _nifti(segmentations / "TCGA-02-0006_tumour.nii.gz", labels=True)
    _nifti(segmentations / "TCGA-06-0122_seg.nii.gz", labels=True)
    return root, segmentations


def test_tcia_manifest_through_the_cli(tmp_path, run_cli, tcia):
    root, segmentations = tcia
    out = tmp_path / "tcia.csv"
    code, stdout, stderr = run_cli("manifest", "tcia", root, "--segmentations", segmentations,
                                   "--out", out)
    assert code == 0, stderr
    assert "TCGA-08-0509: no series matches a channel" in stdout
    assert "TCGA-02-0006: 2 studies, took the one of 1996-08-23" in stdout
    assert "TCGA-02-0006 t1gd: 2 series match, took 'SAG MPRAGE POST' (most images)" in stdout
    table = validate_cohort(out)
    assert table.index.tolist() == ["TCGA-02-0006", "TCGA-06-0122"]
    chosen = {column: os.path.basename(table.loc["TCGA-02-0006", column])
              for column in ("t1", "t1gd", "t2", "flair")}
    assert chosen == {"t1": "1.000000-AX T1", "t1gd": "3.000000-SAG MPRAGE POST",
                      "t2": "4.000000-AX T2 FSE", "flair": "5.000000-AX FLAIR"}
    assert os.path.basename(table.loc["TCGA-06-0122", "t1gd"]) == "8.000000-T1 +C"
    assert table.loc["TCGA-02-0006", "segmentation"].endswith("segs/TCGA-02-0006_tumour.nii.gz")


def test_tcia_pattern_override(tcia):
    root, _ = tcia
    report = read_tcia(root, patterns={"flair": "flair", "t1gd": r"\bgd\b|\+c",
                                       "t1": "t1", "t2": "t2"})
    row = report.table.set_index("patient_id").loc["TCGA-02-0006"]
    assert os.path.basename(row["t1gd"]) == "2.000000-AX T1 POST GD"
    assert os.path.basename(row["t1"]) == "1.000000-AX T1"
    assert "MPRAGE" not in " ".join(report.table.iloc[0].astype(str))  # no longer matches
    assert (report.table["segmentation"] == "").all()


def test_tcia_bad_pattern_exits_2(tmp_path, run_cli, tcia):
    root, _ = tcia
    code, _, stderr = run_cli("manifest", "tcia", root, "--pattern", "t1gd=(post",
                              "--out", tmp_path / "c.csv")
    assert code == 2 and "pattern t1gd='(post'" in stderr


def test_tcia_without_metadata(tmp_path):
    with pytest.raises(InputError, match="no metadata.csv"):
        read_tcia(tmp_path)


# ---------------------------------------------------------------- validation

@pytest.fixture
def cohort(tmp_path):
    """Three patients' files and a manifest with relative paths."""
    rows = []
    for patient in ("TCGA-02-0006", "TCGA-06-0122", "TCGA-08-0509"):
        paths = {c: tmp_path / "images" / f"{patient}_{c}.nii.gz" for c in ("t1gd", "flair")}
        paths["segmentation"] = tmp_path / "images" / f"{patient}_seg.nii.gz"
        for column, path in paths.items():
            _nifti(path, labels=column == "segmentation")
        rows.append({"patient_id": patient, **{k: os.fspath(v) for k, v in paths.items()},
                     "label": "4"})
    manifest = tmp_path / "cohort.csv"
    write_manifest(manifest, pd.DataFrame(rows))
    return manifest


def _matrix(tmp_path, patients: list[str]):
    values = pd.DataFrame(np.ones((len(patients), 2)), index=patients,
                          columns=["ENSG00000141510.18", "ENSG00000146648.18"])
    genes = pd.DataFrame({"gene_name": ["TP53", "EGFR"], "gene_type": "protein_coding"},
                         index=values.columns)
    path = tmp_path / "matrix.tsv"
    write_matrix(path, ExpressionMatrix(values, genes))
    return path


def test_valid_cohort(tmp_path, cohort, run_cli):
    assert "images/TCGA-02-0006_t1gd.nii.gz" in cohort.read_text()  # relative paths
    matrix = _matrix(tmp_path, ["TCGA-02-0006", "TCGA-06-0122", "TCGA-08-0509"])
    table = validate_cohort(cohort, matrix)
    assert table["label"].tolist() == [4, 4, 4]
    assert table.columns.tolist() == ["t1gd", "flair", "segmentation", "label"]
    code, stdout, _ = run_cli("manifest", "check", cohort, "--expression", matrix)
    assert code == 0 and "3 patients" in stdout


def test_every_problem_listed_at_once(tmp_path, cohort, run_cli):
    manifest = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    manifest.loc[1, "flair"] = "images/gone.nii.gz"
    manifest.loc[2, "label"] = "enhancing"
    manifest = pd.concat([manifest, manifest.iloc[[0]]])  # a duplicate patient
    manifest["t1ce"] = ""
    manifest.to_csv(cohort, index=False)
    os.remove(tmp_path / "images" / "TCGA-08-0509_seg.nii.gz")
    matrix = _matrix(tmp_path, ["TCGA-02-0006", "TCGA-06-0122", "TCGA-14-0736"])
    with pytest.raises(CohortError) as caught:
        validate_cohort(cohort, matrix)
    problems = caught.value.problems
    assert problems == [
        "unknown column: t1ce",
        "duplicate patient: TCGA-02-0006",
        "missing file: TCGA-06-0122 flair images/gone.nii.gz",
        "missing file: TCGA-08-0509 segmentation images/TCGA-08-0509_seg.nii.gz",
        "bad label: TCGA-08-0509 'enhancing' is not a whole number",
        "no expression: TCGA-08-0509",
        "expression without images: TCGA-14-0736",
    ]
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{cohort}: 7 problems")
    code, _, stderr = run_cli("manifest", "check", cohort, "--expression", matrix)
    assert code == 2
    assert all(problem in stderr for problem in problems)
    assert stderr.strip().splitlines()[-1].startswith("radiogenomics manifest: error: ")


def test_extra_expression_can_be_allowed(tmp_path, cohort, run_cli):
    matrix = _matrix(tmp_path, ["TCGA-02-0006", "TCGA-06-0122", "TCGA-08-0509",
                                "TCGA-14-0736"])
    with pytest.raises(CohortError, match="expression without images"):
        validate_cohort(cohort, matrix)
    assert len(validate_cohort(cohort, matrix, allow_extra_expression=True)) == 3
    # the command line's refusal names the option that allows it
    code, _, stderr = run_cli("manifest", "check", cohort, "--expression", matrix)
    assert code == 2
    assert stderr.strip().splitlines()[-1].endswith(
        "; --allow-extra-expression accepts the 1 patient(s) with expression but no images")
    code, stdout, stderr = run_cli("manifest", "check", cohort, "--expression", matrix,
                                   "--allow-extra-expression")
    assert code == 0 and "3 patients" in stdout, stderr


def test_mixed_modalities_and_missing_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("patient_id,ct,t2,segmentation\nP1,a.nii,b.nii,s.nii\n")
    with pytest.raises(CohortError, match="mixed modalities: ct with t2"):
        validate_cohort(path)
    path.write_text("patient_id,image,segmentation\nP1,a.nii,s.nii\n")
    with pytest.raises(InputError, match="one or more channels"):
        validate_cohort(path)


def test_tcia_ct_series(tmp_path):
    root = tmp_path / "luad"
    rows = []
    for number, (description, modality, images) in enumerate(
            [("Scout", "CT", 2), ("CHEST 5MM", "CT", 60), ("CHEST 1.25MM", "CT", 240),
             ("PET AC", "PT", 200)]):
        (root / f"s{number}").mkdir(parents=True)
        rows.append({"Subject ID": "TCGA-05-4244", "Series Description": description,
                     "Modality": modality, "Number of Images": images,
                     "File Location": f"./s{number}"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    report = read_tcia(root)
    assert report.table.columns.tolist() == ["patient_id", "ct", "segmentation"]
    assert report.table["ct"].iat[0] == os.fspath((root / "s2").absolute())  # most images
