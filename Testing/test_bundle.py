"""Model bundles: round trip, the checks on loading, pickle refusal, `radiogenomics info`."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from RadioGenomicsLib.integrity import write_manifest
from RadioGenomicsLib.bundle import (
    FORMAT_VERSION, BundleMetadata, convert_torch_weights, load_bundle, make_untrained_bundle,
    sha256_of, write_bundle)
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.model import GenePredictor, ModelConfig

SMALL = ModelConfig.preset("small")
CHANNELS = ["t1", "flair"]
PREPROCESSING = {"spacing_mm": 1.0, "skull_strip": True, "margin_mm": 12.5}


def gene_table() -> pd.DataFrame:
    return pd.DataFrame({
        "gene_id": ["ENSG00000146648.18", "ENSG00000141510.18", "ENSG00000000001.1", "ENSG00000000002.1"],
        "gene_name": ["EGFR", "TP53", "NA", "GENE4"],
        "train_mean": [2.5, 1.25, 0.5, 3.0],
        "train_std": [0.4, 0.3, 0.2, 0.1],
        "validation_r": [0.31, -0.4, math.nan, 0.2],
        "validation_p_adj": [0.001, 0.002, math.nan, 0.03],
    })


@pytest.fixture(scope="module")
def folds() -> list[dict[str, torch.Tensor]]:
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        states.append(GenePredictor(SMALL, len(CHANNELS), len(gene_table())).state_dict())
    return states


@pytest.fixture
def bundle_path(tmp_path, folds):
    metadata = BundleMetadata(channels=CHANNELS, preprocessing=PREPROCESSING, model=SMALL,
                              training_cohort={"name": "TCGA-GBM", "patients": 120})
    return write_bundle(tmp_path / "gbm.bundle", folds, metadata, gene_table())


def one_line_error(call, match: str) -> InputError:
    with pytest.raises(InputError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
    return error.value


def test_round_trip_keeps_weights_metadata_and_genes(bundle_path, folds):
    bundle = load_bundle(bundle_path)
    assert bundle.channels == CHANNELS and bundle.config == SMALL and bundle.folds == 2
    assert bundle.metadata.preprocessing == PREPROCESSING
    assert bundle.metadata.training_cohort == {"name": "TCGA-GBM", "patients": 120}
    assert (bundle.metadata.target_transform, bundle.metadata.target_units) == ("log10(1+x)", "FPKM-UQ")
    pd.testing.assert_frame_equal(bundle.genes, gene_table(), check_dtype=False)
    assert bundle.genes["gene_name"][2] == "NA"  # a name, not a missing value
    models = bundle.models("cpu")
    assert len(models) == 2 and not models[0].training
    for model, state in zip(models, folds):
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not torch.equal(models[0].head.conv.weight, models[1].head.conv.weight)
    assert len(bundle.models(folds="first")) == 1


def test_metadata_file_records_checksums_and_versions(bundle_path):
    document = json.loads((bundle_path / "metadata.json").read_text())
    assert document["format_version"] == FORMAT_VERSION and document["folds"] == 2
    assert document["weights"] == {f"fold_{i}.safetensors": sha256_of(bundle_path / f"fold_{i}.safetensors")
                                   for i in range(2)}
    assert document["model"]["hidden_size"] == SMALL.hidden_size
    assert sorted(p.name for p in bundle_path.iterdir()) == [
        "fold_0.safetensors", "fold_1.safetensors", "genes.tsv", "manifest.json", "metadata.json"]


def test_significant_genes_need_positive_r(bundle_path):
    bundle = load_bundle(bundle_path)
    assert bundle.significant(0.05).tolist() == [True, False, False, True]
    assert bundle.significant(0.01).tolist() == [True, False, False, False]


def test_a_permutation_test_in_the_gene_table_says_what_is_reliable(tmp_path, folds, run_cli,
                                                                    bundle_path):
    """With validation_p_perm (training ran --permutations) a gene is reliable at
    p_perm <= alpha and r > 0, whatever Holm-Sidak said: GENE4 (Holm 0.03) falls, EGFR
    stays, the negative TP53 stays out; bundle, card and `info` agree."""
    from RadioGenomicsLib.card import read_card

    genes = gene_table().assign(validation_p_perm=[0.005, 0.005, math.nan, 0.2])
    metadata = BundleMetadata(channels=CHANNELS, preprocessing=PREPROCESSING, model=SMALL,
                              training_cohort={"name": "TCGA-GBM", "patients": 120})
    bundle = load_bundle(write_bundle(tmp_path / "tested.bundle", folds, metadata, genes))
    pd.testing.assert_frame_equal(bundle.genes, genes, check_dtype=False)
    assert bundle.significant(0.05).tolist() == [True, False, False, False]
    assert bundle.significant(0.001).tolist() == [False, False, False, False]
    card = read_card(tmp_path / "tested.bundle")
    assert card.significant == {"0.05": 1, "0.01": 1}
    assert card.marker_rows[0]["validation_p_perm"] == 0.005
    assert card.significance_test == "permutation test"
    assert read_card(bundle_path).significance_test == "Holm-Sidak"
    code, out, _ = run_cli("info", tmp_path / "tested.bundle")
    flat = " ".join(out.split())
    assert code == 0 and "EGFR (r 0.31, p_adj 0.001, p_perm 0.005, reliable)" in flat
    assert "1 of 4 genes significant at alpha 0.05, 1 at 0.01 (permutation test, r > 0)" in flat


def test_tampered_weights_are_caught(bundle_path):
    weights = bundle_path / "fold_1.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    one_line_error(lambda: load_bundle(bundle_path), r"fold_1.safetensors: checksum mismatch")
    deferred = load_bundle(bundle_path, verify_checksums=False)
    assert len(deferred.models(folds="first")) == 1
    one_line_error(lambda: deferred.models(), "checksum mismatch")


def test_weights_are_hashed_once_per_version(bundle_path, tmp_path, monkeypatch):
    """The digest of a checked weight file is remembered; any rewrite is hashed again, even
    one that keeps the size and sets the modification time back."""
    import os

    from RadioGenomicsLib import hashing

    monkeypatch.setenv("RADIOGENOMICS_CACHE", str(tmp_path / "cache"))
    hashed = []
    real = hashing.sha256_of
    monkeypatch.setattr(hashing, "sha256_of", lambda path: hashed.append(path.name) or real(path))
    load_bundle(bundle_path)
    assert sorted(hashed) == ["fold_0.safetensors", "fold_1.safetensors"]
    load_bundle(bundle_path)
    assert len(hashed) == 2  # remembered: nothing hashed again
    weights = bundle_path / "fold_1.safetensors"
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    one_line_error(lambda: load_bundle(bundle_path), r"fold_1.safetensors: checksum mismatch")
    assert hashed[2:] == ["fold_1.safetensors"]


def test_missing_files_are_named(bundle_path):
    (bundle_path / "fold_0.safetensors").unlink()
    one_line_error(lambda: load_bundle(bundle_path), r"fold_0.safetensors: missing weight file")
    (bundle_path / "genes.tsv").unlink()
    one_line_error(lambda: load_bundle(bundle_path), "no genes.tsv")
    (bundle_path / "metadata.json").unlink()
    one_line_error(lambda: load_bundle(bundle_path), "not a model bundle: no metadata.json")
    one_line_error(lambda: load_bundle(bundle_path / "absent"), "no such bundle folder")


def test_newer_format_version_is_refused(bundle_path):
    path = bundle_path / "metadata.json"
    document = json.loads(path.read_text())
    document["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(document))
    one_line_error(lambda: load_bundle(bundle_path), f"format version {FORMAT_VERSION + 1} is newer.*upgrade")


def test_broken_metadata_is_named(bundle_path):
    path = bundle_path / "metadata.json"
    document = json.loads(path.read_text())
    del document["channels"]
    path.write_text(json.dumps(document))
    one_line_error(lambda: load_bundle(bundle_path), "missing field.* channels")
    path.write_text("{not json")
    one_line_error(lambda: load_bundle(bundle_path), "metadata.json: not valid JSON")


def test_weights_of_another_shape_are_named(bundle_path):
    path = bundle_path / "genes.tsv"
    genes = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    genes.iloc[:3].to_csv(path, sep="\t", index=False)
    write_manifest(bundle_path)  # consistent files, wrong shapes: as a faulty writer would
    bundle = load_bundle(bundle_path)
    one_line_error(lambda: bundle.models(), "fold_0.safetensors: weights do not fit the model")


def test_pickles_are_refused_but_convertible(tmp_path, folds):
    pickle = tmp_path / "fold_0.pt"
    torch.save({"state_dict": folds[0]}, pickle)
    one_line_error(lambda: load_bundle(pickle), "PyTorch pickle.*convert_torch_weights")
    converted = convert_torch_weights(pickle, tmp_path / "fold_0.safetensors")
    assert all(torch.equal(load_file(converted)[k], v) for k, v in folds[0].items())

    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "code.pt")  # an arbitrary object
    one_line_error(lambda: convert_torch_weights(tmp_path / "code.pt", tmp_path / "x.safetensors"),
                   "objects other than tensors.*refused")
    assert not (tmp_path / "x.safetensors").exists()


def test_writing_is_all_or_nothing(tmp_path, folds):
    metadata = BundleMetadata(channels=CHANNELS, preprocessing={}, model=SMALL)
    broken = [folds[0], {**folds[1], "extra": np.zeros(3)}]  # not a tensor: fails mid-write
    with pytest.raises(Exception):
        write_bundle(tmp_path / "b", broken, metadata, gene_table())
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    one_line_error(lambda: write_bundle(tmp_path / "mine", folds, metadata, gene_table()),
                   "exists and is not a bundle")


def test_untrained_bundle_for_tests_and_demos(tmp_path):
    genes = pd.DataFrame({"gene_id": ["G1", "G2", "G3"], "gene_name": ["EGFR", "MGMT", "X"],
                          "train_mean": [1.0, 2.0, 3.0]})
    bundle = make_untrained_bundle(tmp_path / "demo", SMALL, ["ct"], genes, {"spacing_mm": 1.0},
                                   seed=3, folds=2)
    assert bundle.folds == 2 and bundle.channels == ["ct"]
    assert bundle.genes["train_std"].tolist() == [1.0, 1.0, 1.0]
    assert bundle.genes["validation_r"].isna().all()
    first, second = bundle.models()
    assert first.head.conv.bias.tolist() == [1.0, 2.0, 3.0]
    assert not torch.equal(first.head.conv.weight, second.head.conv.weight)
    again = make_untrained_bundle(tmp_path / "again", SMALL, ["ct"], genes, {}, seed=3)
    assert torch.equal(again.models()[0].head.conv.weight, first.head.conv.weight)


def test_info_prints_what_a_user_needs(bundle_path, run_cli):
    code, out, err = run_cli("info", bundle_path)
    assert code == 0 and err == ""
    # an 80-column terminal: only a word longer than the column (a path) may overflow
    for line in out.splitlines():
        assert len(line) <= 80 or " " not in line[17:].strip(), line
    flat = " ".join(out.split())  # the card wraps its values
    assert "t1, flair" in flat and "spacing_mm=1.0" in flat and "skull_strip=True" in flat
    assert "small:" in flat and "log10(1+x) of FPKM-UQ" in flat
    assert "Genes 4" in flat and "Folds 2" in flat
    assert "name=TCGA-GBM, patients=120" in flat
    assert "2 of 4 genes significant at alpha 0.05, 1 at 0.01" in flat
    assert "EGFR (r 0.31, p_adj 0.001, reliable)" in flat and "TP53 (r -0.40" in flat
    assert "not in the bundle: IDH1, MGMT" in flat and "research use only" in flat.lower()
    code, out, _ = run_cli("info", bundle_path, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["significant_genes"] == {"0.05": 2, "0.01": 1}
    assert [m["gene_name"] for m in summary["marker_genes"]] == ["EGFR", "TP53"]


def test_the_card_says_what_the_gene_head_reads():
    """`info`'s model line names the pooling and what else the head reads."""
    from RadioGenomicsLib.card import _model_text
    from RadioGenomicsLib.training.recipe import PRESETS

    assert _model_text(PRESETS["paper"].model.to_dict()).endswith(
        "top-k [1, 2, 5, 10, 20, 50, 100]")
    assert _model_text(PRESETS["frozen-ridge"].model.to_dict()).endswith(
        "mean pooling, the mask's geometry")
    ct = PRESETS["frozen-ridge-ct"]
    assert _model_text(ct.model.to_dict(), ct.preprocessing.to_dict()).endswith(
        "tumour pooling, the mask's geometry (with the tumour's 3-D shape, its intensity "
        "statistics, those of a shell around it), the stem's texture over the tumour and its "
        "core")
    brats = PRESETS["frozen-ridge-brats"]
    assert _model_text(brats.model.to_dict(), brats.preprocessing.to_dict()).endswith(
        "mean pooling, the mask's geometry (with sub-region volumes and shares)")


def test_the_markers_are_the_bundles_own(bundle_path, tmp_path, run_cli):
    """One marker list: the bundle's (its recipe's), the library's only by default."""
    from RadioGenomicsLib.card import read_card
    from RadioGenomicsLib.genetable import MARKER_GENES

    assert read_card(bundle_path).markers == MARKER_GENES
    own = tmp_path / "own"
    shutil.copytree(bundle_path, own)
    meta = json.loads((own / "metadata.json").read_text())
    meta["training_cohort"]["recipe"] = {"markers": ["TP53", "GAPDH"]}
    (own / "metadata.json").write_text(json.dumps(meta))
    assert read_card(own).markers == ("TP53", "GAPDH")
    meta["markers"] = ["EGFR"]
    (own / "metadata.json").write_text(json.dumps(meta))
    card = read_card(own)
    assert card.markers == ("EGFR",) and [r["gene_name"] for r in card.marker_rows] == ["EGFR"]
    write_manifest(own)  # an edited metadata.json is refused unless re-listed
    code, out, _ = run_cli("info", own, "--json")
    assert code == 0 and json.loads(out)["markers"] == ["EGFR"]


def test_info_exit_codes_on_bad_bundles(bundle_path, tmp_path, run_cli):
    broken = tmp_path / "broken"
    shutil.copytree(bundle_path, broken)
    (broken / "fold_1.safetensors").write_bytes(b"changed")
    code, out, err = run_cli("info", broken)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "checksum mismatch" in err and "fold_1.safetensors" in err
    code, _, err = run_cli("info", tmp_path / "model.pth")
    assert code == 2 and "PyTorch pickle" in err
