"""`radiogenomics predict` with an untrained bundle on real CT studies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from RadioGenomicsLib.outputs import COMPLETE_MARKER
from RadioGenomicsLib.bundle import make_untrained_bundle
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import same_grid
from RadioGenomicsLib.model import ModelConfig
from RadioGenomicsLib.predict import TABLE_COLUMNS, choose_device, gene_table, map_gene_indices
from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess
from RadioGenomicsLib.run import TorchFoldRunner, head_rows
from Testing.conftest import lung_cohort

GENES = 40


def _genes() -> pd.DataFrame:
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}.3" for i in range(GENES)],
                          "gene_name": [f"GENE{i}" for i in range(GENES)]})
    genes.loc[:3, "gene_name"] = ["TP53", "EGFR", "KRAS", "ALK"]
    genes["train_mean"] = np.linspace(0.5, 2.5, GENES)
    genes["train_std"] = 0.4
    genes["validation_r"] = np.where(np.arange(GENES) % 3 == 0, 0.45, 0.05)
    genes["validation_p_adj"] = np.where(np.arange(GENES) % 3 == 0, 0.001, 0.9)
    return genes


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "ct_small"
    settings = PreprocessSettings(max_slices=4)
    return make_untrained_bundle(path, ModelConfig.preset("small"), ["ct"], _genes(),
                                 settings.to_dict(), seed=3, folds=2)


@pytest.fixture(scope="module")
def slices(lung_study):
    return preprocess(lung_study, PreprocessSettings(max_slices=4))


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, bundle, lung, testdata):
    """One CLI run, shared: table and two maps."""
    from RadioGenomicsLib.cli import main

    out = tmp_path_factory.mktemp("predict")
    image, label = lung
    code = main(["predict", "--model", str(bundle.path), "--image", f"ct={image}",
                 "--segmentation", str(label), "--out", str(out / "genes.tsv"),
                 "--maps", str(out / "maps"), "--map-gene", "EGFR",
                 "--map-gene", "ENSG00000000005", "--device", "cpu"])
    assert code == 0
    return out


def test_gene_table_columns_ranking_and_values(predicted, bundle):
    table = pd.read_csv(predicted / "genes.tsv", sep="\t")
    assert tuple(table.columns) == TABLE_COLUMNS
    assert len(table) == GENES and table["rank"].tolist() == list(range(1, GENES + 1))
    assert table["cohort_z"].is_monotonic_decreasing
    assert (table["lower"] <= table["predicted"] + 1e-6).all()
    assert (table["predicted"] <= table["upper"] + 1e-6).all()
    genes = bundle.genes.set_index("gene_id")
    expected_z = (table["predicted"] - genes.loc[table["gene_id"], "train_mean"].to_numpy()) / 0.4
    np.testing.assert_allclose(table["cohort_z"], expected_z, atol=1e-4)
    assert table["cohort_percentile"].between(0, 100).all()
    assert (np.diff(table.sort_values("cohort_z")["cohort_percentile"]) >= 0).all()
    reliable = table.set_index("gene_name")["reliable"]
    assert reliable["TP53"] and not reliable["EGFR"]  # rows 0 and 1: validated or not


def test_maps_on_the_input_grid(predicted, lung):
    image = sitk.ReadImage(str(lung[0]))
    for name in ("EGFR", "GENE5"):
        volume = sitk.ReadImage(str(predicted / "maps" / f"{name}.nrrd"))
        assert same_grid(volume, image)
        values = sitk.GetArrayFromImage(volume)
        painted = np.flatnonzero(np.isfinite(values).any(axis=(1, 2)))
        tumour_planes = np.flatnonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(lung[1])))
                                       .any(axis=(1, 2)))
        # every tumour plane has values (also those the model did not see), no other plane
        np.testing.assert_array_equal(painted, tumour_planes)


def test_token_values_from_the_head_rows_give_the_patient_value(bundle, slices):
    """The map of a gene (its head row on each token) and the gene's patient value (the
    top-k mean of the same token values, k-list mean at evaluation) agree."""
    tokens, values = TorchFoldRunner(bundle, 0, torch.device("cpu")).run(slices.images)
    assert tokens.shape == (4, 196, bundle.config.hidden_size)
    egfr = map_gene_indices(bundle, ["egfr"])
    weight, bias = head_rows(bundle, 0, egfr)
    token_values = (tokens @ weight.T + bias)[..., 0]
    flat = np.sort(token_values.ravel())[::-1]
    ks = [min(k, flat.size) for k in bundle.config.top_k]
    expected = np.mean([flat[:k].mean() for k in ks])
    assert values[egfr[0]] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_ensemble_is_the_mean_of_the_folds(bundle, slices):
    device = torch.device("cpu")
    fold_values = np.array([TorchFoldRunner(bundle, fold, device).run(slices.images)[1]
                            for fold in range(2)])
    assert fold_values.shape == (2, GENES)
    assert not np.allclose(fold_values[0], fold_values[1])  # two different models
    table = gene_table(bundle, fold_values).set_index("gene_id")
    np.testing.assert_allclose(table.loc[bundle.genes["gene_id"], "predicted"],
                               fold_values.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(table.loc[bundle.genes["gene_id"], "lower"],
                               fold_values.min(axis=0), rtol=1e-5)


def test_cohort_prediction_skips_a_failing_patient(tmp_path, bundle, testdata, run_cli):
    lung_cohort(testdata, tmp_path / "cohort.csv", ["", "", "9"])
    code, stdout, stderr = run_cli("predict", "--model", bundle.path, "--manifest",
                                   tmp_path / "cohort.csv", "--out", tmp_path / "out",
                                   "--folds", "first")
    assert code == 0 and "2 of 3 patients predicted" in stdout
    assert "TCGA-AA-0003: skipped" in stderr and "label 9 is not in the segmentation" in stderr
    matrix = pd.read_csv(tmp_path / "out" / "predictions.tsv", sep="\t", index_col=0)
    assert matrix.index.tolist() == ["TCGA-AA-0001", "TCGA-AA-0002"]
    assert matrix.columns.tolist() == bundle.genes["gene_id"].tolist()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        COMPLETE_MARKER, "TCGA-AA-0001.csv", "TCGA-AA-0002.csv", "failures.tsv", "predictions.tsv"]
    per_patient = pd.read_csv(tmp_path / "out" / "TCGA-AA-0002.csv").set_index("gene_id")
    np.testing.assert_allclose(per_patient.loc[matrix.columns, "predicted"],
                               matrix.loc["TCGA-AA-0002"], rtol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("channel", "channel 'ct' is missing for the model (it needs ct; given t1)"),
    ("gene", "gene 'MYC' is not among the bundle's 40 genes: a GENCODE v36 gene that the model "
             "was not trained on"),
    ("unknown_gene", "gene 'NOTAGENE1' is not among the bundle's 40 genes: not a GENCODE"),
    ("format", "name it .csv or .tsv"),
    ("checksum", "checksum mismatch"),
    ("missing_weights", "missing weight file"),
    ("newer", "is newer than this"),
])
def test_bad_input_exits_2_before_writing(tmp_path, bundle, lung, run_cli, case, message):
    import shutil

    model = tmp_path / "bundle"
    shutil.copytree(bundle.path, model)
    image, label = lung
    args = ["predict", "--model", model, "--image", f"ct={image}", "--segmentation", label,
            "--out", tmp_path / "out" / "genes.csv", "--maps", tmp_path / "out" / "maps",
            "--map-gene", "TP53"]
    if case == "channel":
        args[4] = f"t1={image}"
    elif case == "gene":
        args[-1] = "MYC"
    elif case == "unknown_gene":
        args[-1] = "NOTAGENE1"
    elif case == "format":
        args[args.index(tmp_path / "out" / "genes.csv")] = tmp_path / "out" / "genes.xlsx"
    elif case == "checksum":
        weights = model / "fold_0.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif case == "missing_weights":
        (model / "fold_1.safetensors").unlink()
    elif case == "newer":
        meta = json.loads((model / "metadata.json").read_text())
        meta["format_version"] += 1
        (model / "metadata.json").write_text(json.dumps(meta))
    code, _, stderr = run_cli(*args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            choose_device("cuda")

