"""The radiomics baseline on a tiny cohort made from PyRadiomics' own brain MRI.

Eighteen "patients" are brain1 with its tumour mask cut to fewer slices and grown or
shrunk in-plane, flipped, cropped and gamma-mapped. Three genes are a linear function
of the log tumour volume plus noise; the others are noise. Features are extracted once
for the module (cached) and every run after that reads them from the cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from RadioGenomicsLib.expression import ExpressionMatrix, write_matrix
from RadioGenomicsLib.training import baseline
from RadioGenomicsLib.training.folds import assign_folds

PATIENTS = 18
FOLDS = 3
PLANTED = ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"]
NULLS = [f"ENSG{i:011d}" for i in range(100, 117)]


def _patient_volumes(image: sitk.Image, label: sitk.Image, index: int,
                     rng: np.random.Generator) -> tuple[sitk.Image, sitk.Image]:
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    tumour = sitk.GetArrayFromImage(label) > 0
    slices = np.flatnonzero(tumour.any(axis=(1, 2)))
    keep = 2 + index % 6  # 2..7 of the tumour's 7 slices
    tumour[slices[keep:]] = False
    grow = index % 3 - 1  # shrink, keep or grow in-plane by one pixel
    mask = sitk.GetImageFromArray(tumour.astype(np.uint8))
    if grow:
        filter_ = sitk.BinaryDilate if grow > 0 else sitk.BinaryErode
        mask = filter_(mask, [1, 1, 0])
    tumour = sitk.GetArrayFromImage(mask)
    gamma = rng.uniform(0.7, 1.4)
    values = (np.clip(values, 0, None) / values.max()) ** gamma * 1000.0
    if index % 2:
        values, tumour = values[:, :, ::-1], tumour[:, :, ::-1]
    z, y, _ = np.nonzero(sitk.GetArrayViewFromImage(label))
    margin = 20 + 2 * (index % 4)
    out = []
    for array in (values, tumour):
        volume = sitk.GetImageFromArray(np.ascontiguousarray(array))
        volume.CopyInformation(image)
        # SimpleITK slicing (x, y, z) keeps the physical position of the cropped part
        out.append(volume[:, int(y.min()) - margin:int(y.max()) + margin,
                          max(int(z.min()) - 2, 0):int(z.max()) + 3])
    return out[0], out[1]


@pytest.fixture(scope="module")
def cohort(testdata, tmp_path_factory) -> dict:
    """manifest.csv, expression.tsv, the voxel volume of each patient, and a feature cache."""
    folder = tmp_path_factory.mktemp("baseline_cohort")
    image = sitk.ReadImage(str(testdata / "pyradiomics" / "brain1_image.nrrd"))
    label = sitk.ReadImage(str(testdata / "pyradiomics" / "brain1_label.nrrd"))
    rng = np.random.default_rng(5)
    rows, volumes = [], {}
    for index in range(PATIENTS):
        patient = f"TCGA-02-{index:04d}"
        volume, mask = _patient_volumes(image, label, index, rng)
        sitk.WriteImage(volume, str(folder / f"{patient}_t1.nrrd"), useCompression=True)
        sitk.WriteImage(mask, str(folder / f"{patient}_seg.nrrd"), useCompression=True)
        rows.append({"patient_id": patient, "t1": f"{patient}_t1.nrrd",
                     "segmentation": f"{patient}_seg.nrrd"})
        volumes[patient] = sitk.GetArrayViewFromImage(mask).sum() * np.prod(mask.GetSpacing())
    manifest = pd.DataFrame(rows)
    manifest.to_csv(folder / "manifest.csv", index=False)
    signal = np.log(pd.Series(volumes))
    signal = (signal - signal.mean()) / signal.std()
    values = pd.DataFrame(rng.normal(5.0, 1.0, (PATIENTS, len(NULLS))),
                          index=manifest["patient_id"], columns=NULLS)
    for gene, slope in zip(PLANTED, (1.0, -0.8, 0.6)):
        values[gene] = 5.0 + slope * signal.to_numpy() + rng.normal(0, 0.25, PATIENTS)
    values.index.name = "patient_id"
    genes = pd.DataFrame({"gene_name": [f"G{i}" for i in range(values.shape[1])],
                          "gene_type": "protein_coding"}, index=values.columns)
    genes.loc[PLANTED[0], "gene_name"] = "EGFR"
    write_matrix(folder / "expression.tsv", ExpressionMatrix(values, genes))
    return {"folder": folder, "manifest": folder / "manifest.csv",
            "expression": folder / "expression.tsv", "volumes": pd.Series(volumes),
            "cache": tmp_path_factory.mktemp("radiomics_cache")}


def _run(run_cli, cohort: dict, out: Path, *extra: str, manifest: Path | None = None,
         expression: Path | None = None):
    return run_cli("baseline", "--manifest", manifest or cohort["manifest"],
                   "--expression", expression or cohort["expression"], "--out", out,
                   "--folds", str(FOLDS), "--seed", "3", "--region", "body",
                   "--cache", cohort["cache"], *extra)


@pytest.fixture(scope="module")
def result(cohort, tmp_path_factory) -> dict:
    from RadioGenomicsLib.cli import main

    out = tmp_path_factory.mktemp("baseline_run") / "baseline"
    code = main(["baseline", "--manifest", str(cohort["manifest"]), "--expression",
                 str(cohort["expression"]), "--out", str(out), "--folds", str(FOLDS),
                 "--seed", "3", "--region", "body", "--cache", str(cohort["cache"])])
    return {"code": code, "out": out}


def test_planted_genes_are_found_and_null_genes_are_not(result):
    assert result["code"] == 0
    stats = pd.read_csv(result["out"] / "report" / "gene_stats.tsv", sep="\t").set_index("gene_id")
    assert stats.loc[PLANTED, "significant"].all()
    assert (stats.loc[PLANTED, "pearson_r"] > 0.6).all()
    assert not stats.loc[NULLS, "significant"].any()
    assert stats.loc[PLANTED[0], "gene_name"] == "EGFR"


def test_report_and_outputs_have_the_agreed_layout(result, cohort):
    out = result["out"]
    summary = json.loads((out / "report" / "summary.json").read_text())
    for key in ("patients", "genes", "folds", "significant_genes_0.05", "significant_genes_0.01",
                "pearson_mean", "pearson_median", "pearson_min", "pearson_max", "per_fold"):
        assert key in summary
    assert (summary["patients"], summary["genes"], summary["folds"]) == (PATIENTS, 20, FOLDS)
    assert summary["significant_genes_0.05"] >= len(PLANTED)
    assert summary["markers"]["EGFR"] > 0.6
    assert (out / "report" / "pearson_hist.png").stat().st_size > 0
    oof = pd.read_csv(out / "report" / "oof_predictions.tsv", sep="\t", index_col="patient_id")
    assert oof.shape == (PATIENTS, 20) and np.isfinite(oof.to_numpy()).all()

    features = pd.read_csv(out / "features.tsv", sep="\t", index_col="patient_id")
    assert features.shape[0] == PATIENTS and features.shape[1] > 90
    assert {"shape_VoxelVolume", "t1_firstorder_Mean", "t1_glcm_Contrast",
            "t1_ngtdm_Busyness"} <= set(features.columns)
    # the mask resampled to 1 mm holds about the volume of the mask as drawn
    ratio = features["shape_VoxelVolume"] / cohort["volumes"].loc[features.index]
    assert ratio.between(0.7, 1.3).all()

    folds = pd.read_csv(out / "folds.tsv", sep="\t", index_col="patient_id")["fold"]
    manifest = pd.read_csv(cohort["manifest"])
    expected = assign_folds(list(manifest["patient_id"])[::-1], FOLDS, seed=3)
    assert folds.to_dict() == expected.to_dict()

    details = json.loads((out / "baseline.json").read_text())
    assert len(details["fold_fits"]) == FOLDS
    assert all(0 < fit["features_used"] <= features.shape[1] for fit in details["fold_fits"])
    assert details["extractor"]["binWidth"] == baseline.BIN_WIDTH_SD


def test_rerun_reads_the_cache_and_gives_the_same_predictions(result, cohort, run_cli,
                                                              tmp_path, monkeypatch):
    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted again")

    monkeypatch.setattr(baseline, "extract_features", no_extraction)
    code, _, err = _run(run_cli, cohort, tmp_path / "again")
    assert code == 0, err
    first = pd.read_csv(result["out"] / "report" / "oof_predictions.tsv", sep="\t")
    again = pd.read_csv(tmp_path / "again" / "report" / "oof_predictions.tsv", sep="\t")
    pd.testing.assert_frame_equal(first, again)


def test_parallel_extraction_gives_the_serial_features(result, cohort, tmp_path):
    cohort_table = pd.read_csv(cohort["manifest"]).set_index("patient_id").iloc[:2]
    cohort_table = cohort_table.assign(t1=[str(cohort["folder"] / p) for p in cohort_table["t1"]],
                                       segmentation=[str(cohort["folder"] / p)
                                                     for p in cohort_table["segmentation"]])
    settings = baseline.PreprocessSettings(region="body")
    parallel = baseline.cohort_features(cohort_table, ["t1"], settings,
                                        baseline.FeatureCache(tmp_path), "m.csv", jobs=2)
    serial = pd.read_csv(result["out"] / "features.tsv", sep="\t", index_col="patient_id")
    np.testing.assert_allclose(parallel.loc[cohort_table.index, serial.columns].to_numpy(),
                               serial.loc[cohort_table.index].to_numpy(), rtol=1e-6)


def _assert_refused(code: int, err: str, out: Path, *words: str) -> None:
    assert code == 2
    # notes and progress may come first; the error is one line, the last
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for word in words:
        assert word in errors[0]
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}.partial") for p in out.parent.iterdir())


def test_fewer_patients_than_folds(cohort, run_cli, tmp_path):
    manifest = pd.read_csv(cohort["manifest"]).iloc[:2]
    manifest = manifest.assign(t1=[str(cohort["folder"] / p) for p in manifest["t1"]],
                               segmentation=[str(cohort["folder"] / p)
                                             for p in manifest["segmentation"]])
    manifest.to_csv(tmp_path / "two.csv", index=False)
    code, _, err = _run(run_cli, cohort, tmp_path / "out", manifest=tmp_path / "two.csv")
    _assert_refused(code, err, tmp_path / "out", "two.csv", "fewer than the 3 folds")


def test_empty_segmentation_stops_before_any_extraction(cohort, run_cli, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(baseline, "extract_features", lambda *a: calls.append(a))
    manifest = pd.read_csv(cohort["manifest"])
    manifest = manifest.assign(t1=[str(cohort["folder"] / p) for p in manifest["t1"]],
                               segmentation=[str(cohort["folder"] / p)
                                             for p in manifest["segmentation"]])
    empty = sitk.ReadImage(manifest.loc[5, "segmentation"]) * 0
    sitk.WriteImage(empty, str(tmp_path / "empty_seg.nrrd"))
    manifest.loc[5, "segmentation"] = str(tmp_path / "empty_seg.nrrd")
    manifest.loc[6, "t1"] = str(tmp_path / "changed_t1.nrrd")  # not cached: must be checked
    sitk.WriteImage(sitk.ReadImage(str(cohort["folder"] / "TCGA-02-0006_t1.nrrd")) * 1.01,
                    manifest.loc[6, "t1"])
    manifest.to_csv(tmp_path / "cohort.csv", index=False)
    code, _, err = _run(run_cli, cohort, tmp_path / "out", manifest=tmp_path / "cohort.csv")
    _assert_refused(code, err, tmp_path / "out", "cohort.csv", "TCGA-02-0005",
                    "empty_seg.nrrd", "empty")
    assert calls == []


def test_patient_without_expression(cohort, run_cli, tmp_path):
    matrix = pd.read_csv(cohort["expression"], sep="\t").iloc[1:]
    matrix.to_csv(tmp_path / "expression.tsv", sep="\t", index=False)
    code, _, err = _run(run_cli, cohort, tmp_path / "out", expression=tmp_path / "expression.tsv")
    _assert_refused(code, err, tmp_path / "out", "manifest.csv", "no expression", "TCGA-02-0000")


def test_a_folder_that_is_no_earlier_baseline_is_never_replaced(cohort, run_cli, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = _run(run_cli, cohort, out)
    assert code == 2 and "no complete earlier output" in err
    assert (out / "notes.txt").read_text() == "keep me"


def test_bad_alphas_refused(cohort, run_cli, tmp_path):
    code, _, err = _run(run_cli, cohort, tmp_path / "out", "--alphas", "1", "-2")
    _assert_refused(code, err, tmp_path / "out", "--alphas")


def test_ridge_drops_constant_features_and_shrinks_noise_genes_more():
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(40, 6)), columns=[f"f{i}" for i in range(6)])
    x["constant"] = 3.0
    y = pd.DataFrame({"linked": x["f0"] * 2 + rng.normal(0, 0.1, 40),
                      "noise": rng.normal(size=40)})
    predicted, used, alphas = baseline.fit_predict(x.iloc[:30], y.iloc[:30], x.iloc[30:],
                                                   baseline.DEFAULT_ALPHAS)
    assert used == 6
    assert alphas[0] < alphas[1]
    assert list(predicted.index) == list(range(30, 40))
    assert np.corrcoef(predicted["linked"], y["linked"].iloc[30:])[0, 1] > 0.95


def test_permuted_targets_are_a_control_that_finds_nothing(result, cohort, run_cli, tmp_path):
    """The planted genes lose their link once the expression rows are shuffled."""
    code, out, err = _run(run_cli, cohort, tmp_path / "permuted", "--permute-targets")
    assert code == 0, err
    stats = pd.read_csv(tmp_path / "permuted" / "report" / "gene_stats.tsv", sep="\t")
    assert not stats["significant"].any()
    summary = json.loads((tmp_path / "permuted" / "report" / "summary.json").read_text())
    assert summary["significant_genes_0.05"] == 0
    assert "CONTROL: expression rows permuted" in out + err
    # the rows were really moved: the same values, other patients
    measured = pd.read_csv(tmp_path / "permuted" / "report" / "measured.tsv", sep="\t", index_col=0)
    original = pd.read_csv(result["out"] / "report" / "measured.tsv", sep="\t", index_col=0)
    assert sorted(measured[PLANTED[0]].round(5)) == sorted(original[PLANTED[0]].round(5))
    assert not np.allclose(measured[PLANTED[0]], original.loc[measured.index, PLANTED[0]])


def test_the_permutation_test_calibrates_each_gene_against_the_ridges_own_null(
        result, cohort, run_cli, tmp_path):
    """--permutations: the ridge re-run on 39 permutations of the expression rows; the
    planted genes stand above every permuted run's genes (p = 1/40), the null genes do
    not pass; the report, its summary and baseline.json say how many runs; the
    predictions are those of the run without the test."""
    code, out, err = _run(run_cli, cohort, tmp_path / "tested", "--permutations", "39")
    assert code == 0, err
    folder = tmp_path / "tested"
    stats = pd.read_csv(folder / "report" / "gene_stats.tsv", sep="\t").set_index("gene_id")
    assert stats.loc[PLANTED, "p_perm"].tolist() == pytest.approx([1 / 40] * 3)
    assert (stats.loc[NULLS, "p_perm"] > 0.05).all()
    summary = json.loads((folder / "report" / "summary.json").read_text())
    assert summary["permutations"] == 39
    assert summary["permutation_significant_genes_0.05"] == 3
    assert max(stats.loc[NULLS, "pearson_r"]) < summary["null_max_r_95"] < min(
        stats.loc[PLANTED, "pearson_r"])
    assert json.loads((folder / "baseline.json").read_text())["permutations"] == 39
    assert "permutation test (39 permuted cross-validations" in out
    plain = pd.read_csv(result["out"] / "report" / "gene_stats.tsv", sep="\t")
    assert plain["p_perm"].isna().all()
    np.testing.assert_allclose(stats["pearson_r"], plain.set_index("gene_id")["pearson_r"])


def test_too_few_permutations_are_refused(cohort, run_cli, tmp_path):
    code, _, err = _run(run_cli, cohort, tmp_path / "few", "--permutations", "10")
    assert code == 2 and "permutations 10: 0 or at least 19" in err
    assert not (tmp_path / "few").exists()


def test_folds_by_site_need_enough_sites(cohort, run_cli, tmp_path):
    code, _, err = _run(run_cli, cohort, tmp_path / "sites", "--group-by", "site")
    assert code == 2 and "1 tissue-source site(s) cannot fill 3 folds" in err
