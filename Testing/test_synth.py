"""The synthetic cohort: real formats, consistent truth, determinism, known links."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import stats

from RadioGenomicsLib import gdc
from RadioGenomicsLib.cohort import validate_cohort
from RadioGenomicsLib.expression import build_matrix
from RadioGenomicsLib.gencode import gene_names, gene_table
from RadioGenomicsLib.synth import expression, synthesize_cohort, tumour

MRI_CHANNELS = ("t1", "t1gd", "t2", "flair")


@pytest.fixture(scope="module")
def mri(tmp_path_factory) -> Path:
    return synthesize_cohort(tmp_path_factory.mktemp("synth") / "mri", patients=6, genes=50,
                             modality="mri", seed=11, jobs=1)


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    return synthesize_cohort(tmp_path_factory.mktemp("synth") / "ct", patients=3, genes=12,
                             modality="ct", seed=5, jobs=1)


def _truth(folder: Path) -> dict:
    return json.loads((folder / "truth.json").read_text())


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# ---------------------------------------------------------------- images and manifest

def test_manifest_lists_every_patient_with_resolving_paths(mri):
    manifest = pd.read_csv(mri / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest.columns) == ["patient_id", *MRI_CHANNELS, "segmentation", "label"]
    assert list(manifest["patient_id"]) == [f"TCGA-S1-{i:04d}" for i in range(1, 7)]
    for column in (*MRI_CHANNELS, "segmentation"):
        assert not any(Path(p).is_absolute() for p in manifest[column])
        assert all((mri / p).is_file() for p in manifest[column])
    validated = validate_cohort(mri / "manifest.csv")  # the cohort reader accepts it
    assert validated["label"].isna().all()  # MRI: the tumour is every BraTS label


def test_nifti_channels_share_a_sane_grid(mri):
    manifest = pd.read_csv(mri / "manifest.csv", dtype=str, keep_default_na=False)
    row = manifest.iloc[0]
    images = {c: sitk.ReadImage(str(mri / row[c])) for c in (*MRI_CHANNELS, "segmentation")}
    reference = images["t1"]
    assert reference.GetSpacing() == pytest.approx((1.5, 1.5, 1.5))
    assert 90 <= min(reference.GetSize()) and max(reference.GetSize()) <= 160
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction @ direction.T, np.eye(3), atol=1e-6)
    for name, image in images.items():
        assert image.GetSize() == reference.GetSize(), name
        assert image.GetOrigin() == pytest.approx(reference.GetOrigin())
        assert image.GetDirection() == pytest.approx(reference.GetDirection())
    assert images["t1"].GetPixelID() == sitk.sitkInt16
    assert images["segmentation"].GetPixelID() == sitk.sitkUInt8
    # nibabel reads the same files with the same geometry (RAS = LPS with x, y negated)
    nifti = nib.load(str(mri / row["t1"]))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(nifti.affine[:3, 3], lps_to_ras @ reference.GetOrigin(),
                               atol=1e-3)


def test_segmentation_is_brats_labelled_inside_the_brain(mri):
    truth = _truth(mri)
    for patient in truth["patients"]:
        folder = mri / "images" / patient["patient_id"]
        seg_image = sitk.ReadImage(str(folder / f"{patient['patient_id']}_seg.nii.gz"))
        seg = sitk.GetArrayFromImage(seg_image)
        t1 = _array(folder / f"{patient['patient_id']}_t1.nii.gz")
        assert set(np.unique(seg)) <= {0, 1, 2, 4}
        centre = seg_image.TransformPhysicalPointToIndex(patient["centre_lps_mm"])
        assert seg_image[centre] in (1, 4)  # the recorded centre is inside the tumour core
        assert (seg == 4).any() and (seg == 2).any()
        assert (t1[seg > 0] > 0).all()  # every labelled voxel is brain (not background)
        voxel_ml = 1.5 ** 3 / 1000
        measured = {str(k): round(float((seg == k).sum()) * voxel_ml, 3)
                    for k in (1, 2, 4) if (seg == k).any()}
        assert measured == pytest.approx(patient["label_ml"])


def test_tumour_shows_in_the_contrasts(mri):
    patient = _truth(mri)["patients"][0]["patient_id"]
    folder = mri / "images" / patient
    seg = _array(folder / f"{patient}_seg.nii.gz")
    values = {c: _array(folder / f"{patient}_{c}.nii.gz").astype(float) for c in MRI_CHANNELS}
    brain = (values["t1"] > 0) & (seg == 0)
    # enhancing rim bright on T1Gd relative to T1; oedema bright on FLAIR
    ratio_rim = values["t1gd"][seg == 4].mean() / values["t1"][seg == 4].mean()
    ratio_brain = values["t1gd"][brain].mean() / values["t1"][brain].mean()
    assert ratio_rim > 1.3 * ratio_brain
    assert values["flair"][seg == 2].mean() > 1.3 * values["flair"][brain].mean()


def test_ct_cohort_has_one_label_in_the_chest(ct):
    manifest = pd.read_csv(ct / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest.columns) == ["patient_id", "ct", "segmentation", "label"]
    assert set(manifest["label"]) == {"1"}
    for _, row in manifest.iterrows():
        hu = _array(ct / row["ct"])
        seg = _array(ct / row["segmentation"])
        assert set(np.unique(seg)) == {0, 1}
        assert hu.min() >= -1024 and hu.max() <= 3071
        assert np.median(hu[seg == 1]) > -200  # a solid tumour
        zs, ys, xs = np.nonzero(seg)
        shell = hu[max(zs.min() - 3, 0):zs.max() + 4, max(ys.min() - 8, 0):ys.max() + 9,
                   max(xs.min() - 8, 0):xs.max() + 9]
        assert (shell < -700).mean() > 0.05  # it sits in lung


# ---------------------------------------------------------------- expression

def test_star_files_have_the_real_layout(mri):
    sheet = gdc.read_sample_sheet(mri / expression.SHEET_NAME)
    path = mri / "expression" / sheet["file_id"].iloc[0] / sheet["file_name"].iloc[0]
    assert path.name.endswith(".rna_seq.augmented_star_gene_counts.tsv")
    lines = path.read_text().splitlines()
    assert lines[0] == "# gene-model: GENCODE v36"
    assert lines[1].split("\t") == list(gdc.STAR_COLUMNS)
    assert [line.split("\t")[0] for line in lines[2:6]] == list(gdc.SUMMARY_ROWS)
    raw = pd.read_csv(path, sep="\t", skiprows=[0, 2, 3, 4, 5])  # as people read them
    assert list(raw.columns) == list(gdc.STAR_COLUMNS) and len(raw) == 50
    table = gene_table().set_index("gene_id")
    assert raw["gene_id"].isin(table.index).all()
    assert list(raw["gene_name"]) == gene_names(raw["gene_id"])
    assert list(raw["gene_type"]) == list(table.loc[raw["gene_id"], "gene_type"])
    assert set(expression.MARKER_GENES) <= set(raw["gene_name"])
    assert (raw["stranded_first"] + raw["stranded_second"] == raw["unstranded"]).all()
    tpm, fpkm, fpkm_uq = gdc.star_units(raw["unstranded"].to_numpy(),
                                        table.loc[raw["gene_id"], "length_bp"].to_numpy(),
                                        (raw["gene_type"] == "protein_coding").to_numpy())
    np.testing.assert_allclose(raw["fpkm_uq_unstranded"], fpkm_uq, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(raw["tpm_unstranded"], tpm, rtol=1e-6, atol=1e-4)


def test_sample_sheet_and_matrix_exercise_averaging_and_filters(mri):
    sheet = gdc.read_sample_sheet(mri / expression.SHEET_NAME)
    for _, row in sheet.iterrows():
        assert (mri / "expression" / row["file_id"] / row["file_name"]).is_file()
    assert sheet.groupby("case_id")["sample_type"].apply(lambda t: "01" in set(t)).all()
    assert (sheet[sheet["sample_type"] == "01"].groupby("case_id").size() > 1).any()
    assert (sheet["sample_type"] == "11").any()
    matrix, summary = build_matrix(mri / "expression", mri / expression.SHEET_NAME,
                                   drop_median_zero_genes=False)
    assert list(matrix.values.index) == [f"TCGA-S1-{i:04d}" for i in range(1, 7)]
    assert summary.averaged and summary.samples_dropped  # second vials averaged, normals out
    median_zero = (matrix.values.median(axis=0) == 0).sum()
    assert 0 < median_zero < matrix.values.shape[1]


def test_truth_is_consistent_with_the_files(mri):
    truth = _truth(mri)
    manifest = pd.read_csv(mri / "manifest.csv", dtype=str, keep_default_na=False)
    assert [p["patient_id"] for p in truth["patients"]] == list(manifest["patient_id"])
    assert list(truth["factors"]) == list(tumour.FACTORS)
    sheet = gdc.read_sample_sheet(mri / expression.SHEET_NAME)
    for patient in truth["patients"]:
        assert list(patient["latent"]) == list(tumour.FACTORS)
        assert sorted(patient["samples"]) == sorted(
            sheet.loc[sheet["case_id"] == patient["patient_id"], "sample_id"])
    linked = truth["expression"]["linked"]
    assert len(linked) == truth["expression"]["linked_genes"] == 5  # 10 % of 50
    assert truth["expression"]["null_genes"] == 45
    first_file = mri / "expression" / sheet["file_id"].iloc[0] / sheet["file_name"].iloc[0]
    genes = set(gdc.read_star_counts(first_file)["gene_id"])
    assert {g["gene_id"] for g in linked} <= genes
    by_name = {g["gene_name"]: g for g in linked}
    for name, (factor, effect) in expression.MARKER_LINKS.items():
        assert by_name[name]["factor"] == factor and by_name[name]["effect_log2"] == effect
    assert not {"ALK", "BRAF", "CHEK2"} & set(by_name)


def test_linked_genes_follow_their_factor_and_null_genes_do_not():
    """On a moderate cohort (expression only): the links are real, the rest is chance."""
    rng = np.random.default_rng(3)
    model = expression.draw_model(400, rng)
    latent = rng.standard_normal((120, len(tumour.FACTORS)))
    counts = np.array([expression.draw_counts(model, z, rng) for z in latent])
    _, _, fpkm_uq = gdc.star_units(counts, model.genes["length_bp"].to_numpy(),
                                   (model.genes["gene_type"] == "protein_coding").to_numpy())
    target = np.log10(1 + fpkm_uq)
    egfr = int(np.flatnonzero(model.genes["gene_name"] == "EGFR")[0])
    r, p = stats.pearsonr(target[:, egfr], latent[:, tumour.FACTORS.index("proliferation")])
    assert r > 0.5 and p < 1e-6
    linked = (model.effects != 0).any(axis=1)
    expressed = np.median(counts, axis=0) > 0
    null = np.flatnonzero(~linked & expressed)
    p_null = np.array([stats.pearsonr(target[:, g], latent[:, k])[1]
                       for g in null for k in range(len(tumour.FACTORS))])
    assert 0.01 < (p_null < 0.05).mean() < 0.09  # about 5 %: chance only
    strong = [g for g in np.flatnonzero(linked) if np.abs(model.effects[g]).max() > 0.5]
    hits = [stats.pearsonr(target[:, g], latent[:, np.argmax(np.abs(model.effects[g]))])[1]
            < 1e-3 for g in strong]
    assert np.mean(hits) > 0.9


def test_traits_follow_their_factors():
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((300, len(tumour.FACTORS)))
    traits = pd.DataFrame([tumour.traits_from_factors(z, "mri", rng).as_dict() for z in latent])
    pairs = {"radius_mm": "proliferation", "necrosis_fraction": "necrosis",
             "oedema_fraction": "infiltration", "texture": "heterogeneity",
             "location_quantile": "location"}
    for trait, factor in pairs.items():
        r = stats.spearmanr(traits[trait], latent[:, tumour.FACTORS.index(factor)])[0]
        assert r > 0.8, trait
    assert stats.spearmanr(traits["radius_mm"], latent[:, 1])[0] < 0.2  # not necrosis's


# ---------------------------------------------------------------- determinism

def test_same_seed_same_bytes_whatever_the_workers(mri, tmp_path):
    again = synthesize_cohort(tmp_path / "again", patients=6, genes=50, modality="mri",
                              seed=11, jobs=2)
    assert _hashes(again) == _hashes(mri)


def test_another_seed_another_cohort(tmp_path):
    first = synthesize_cohort(tmp_path / "a", patients=2, genes=5, modality="ct", seed=1,
                              jobs=1)
    second = synthesize_cohort(tmp_path / "b", patients=2, genes=5, modality="ct", seed=2,
                               jobs=1)
    assert _hashes(first).keys() != _hashes(second).keys()  # other file ids
    ct_first = sorted(h for n, h in _hashes(first).items() if n.endswith("_ct.nii.gz"))
    ct_second = sorted(h for n, h in _hashes(second).items() if n.endswith("_ct.nii.gz"))
    assert not set(ct_first) & set(ct_second)


# ---------------------------------------------------------------- command line

def test_cli_writes_a_cohort(run_cli, tmp_path):
    code, out, err = run_cli("synth", "--out", tmp_path / "c", "--patients", "2", "--genes",
                             "3", "--modality", "ct", "--seed", "4", "--jobs", "1")
    assert code == 0, err
    assert "2 CT patients" in out
    truth = _truth(tmp_path / "c")
    assert truth["modality"] == "ct" and truth["expression"]["genes"] == 3
    linked = {g["gene_name"] for g in truth["expression"]["linked"]}
    assert linked == {"IDH1", "EGFR", "MGMT"}  # the first three markers, all linked


@pytest.mark.parametrize("args, words", [
    (("--patients", "1", "--genes", "5"), "--patients 1"),
    (("--patients", "3", "--genes", "0"), "--genes 0"),
    (("--patients", "3", "--genes", "70000"), "--genes 70000"),
    (("--patients", "3", "--genes", "5", "--modality", "pet"), "--modality 'pet'"),
])
def test_bad_requests_exit_2_with_one_line(run_cli, tmp_path, args, words):
    code, out, err = run_cli("synth", "--out", tmp_path / "c", *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and words in err
    assert not (tmp_path / "c").exists()


def test_a_folder_of_other_files_is_not_replaced(run_cli, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("keep me")
    code, _, err = run_cli("synth", "--out", tmp_path / "c", "--patients", "2", "--genes", "2")
    assert code == 2 and "not empty" in err
    assert (tmp_path / "c" / "notes.txt").read_text() == "keep me"


def test_failure_half_way_leaves_nothing(monkeypatch, tmp_path):
    def broken(*_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(expression, "write_sample_sheet", broken)
    with pytest.raises(RuntimeError):
        synthesize_cohort(tmp_path / "c", patients=2, genes=3, modality="ct", jobs=1)
    assert list(tmp_path.iterdir()) == []


def test_report_scored_against_the_truth(mri, tmp_path):
    from RadioGenomicsLib.synth import score_against_truth

    linked = [g["gene_id"] for g in _truth(mri)["expression"]["linked"]][:3]
    stats = pd.DataFrame({"gene_id": linked + ["ENSG_NULL_1", "ENSG_NULL_2"],
                          "pearson_r": [0.6, 0.4, 0.0, 0.5, -0.1],
                          "significant": [True, True, False, True, False]})
    stats.to_csv(tmp_path / "gene_stats.tsv", sep="\t", index=False)
    score = score_against_truth(mri / "truth.json", tmp_path)
    per_factor = score.pop("per_factor")
    assert score == {"genes": 5, "linked": 3, "null": 2, "significant": 3,
                     "significant_linked": 2, "null_significant": 1,
                     "r_linked": pytest.approx(1 / 3), "r_null": pytest.approx(0.2)}
    factor_of = {g["gene_id"]: g["factor"] for g in _truth(mri)["expression"]["linked"]}
    found = [factor_of[g] for g, hit in zip(linked, [True, True, False]) if hit]
    assert sum(v["found"] for v in per_factor.values()) == 2
    assert all(per_factor[f]["found"] >= found.count(f) for f in set(found))
    assert sum(v["linked"] for v in per_factor.values()) == 3  # of this table's genes
    # with the permutation test: its linked and null genes, per factor
    stats["p_perm"] = [0.01, 0.2, 0.01, 0.04, 0.01]  # the last two: r <= 0 or a null gene
    stats.to_csv(tmp_path / "gene_stats.tsv", sep="\t", index=False)
    score = score_against_truth(mri / "truth.json", tmp_path)
    assert (score["permutation_linked"], score["permutation_null"]) == (1, 1)
    assert score["permutation_per_factor"] == {
        f: int(f == factor_of[linked[0]]) for f in per_factor}
