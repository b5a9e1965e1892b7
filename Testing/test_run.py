"""The prediction run: one pipeline for every face, and any gene's map from a run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from Testing.conftest import coloured_outside_outline
from RadioGenomicsLib.integrity import write_manifest
from RadioGenomicsLib.outputs import COMPLETE_MARKER
from RadioGenomicsLib.bundle import load_bundle, make_untrained_bundle
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.model import ModelConfig
from RadioGenomicsLib.predict import map_gene_indices
from RadioGenomicsLib.preprocess import PreprocessSettings
from RadioGenomicsLib.run import (RUN_FILES, StudyInputs, TorchFoldRunner, open_run,
                                  predict_study, run_maps)

GENES = 30


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}.2" for i in range(GENES)],
                          "gene_name": [f"G{i}" for i in range(GENES)]})
    genes.loc[:2, "gene_name"] = ["EGFR", "KRAS", "TP53"]
    genes["train_mean"], genes["train_std"] = np.linspace(1, 2, GENES), 0.3
    path = tmp_path_factory.mktemp("bundle") / "ct_small"
    return make_untrained_bundle(path, ModelConfig.preset("small"), ["ct"], genes,
                                 PreprocessSettings(max_slices=5).to_dict(), seed=7, folds=2)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, bundle, lung):
    """`radiogenomics predict` of one study with two maps, its run beside the table."""
    from RadioGenomicsLib.cli import main

    out = tmp_path_factory.mktemp("predict")
    image, label = lung
    code = main(["predict", "--model", str(bundle.path), "--image", f"ct={image}",
                 "--segmentation", str(label), "--out", str(out / "genes.csv"),
                 "--maps", str(out / "maps"), "--map-gene", "EGFR", "--map-gene", "G7",
                 "--picture", str(out / "maps.png"), "--device", "cpu"])
    assert code == 0
    return out


def test_the_run_folder_holds_what_it_promises(predicted, bundle, lung):
    run, _ = open_run(predicted / "genes.run")
    assert sorted(p.name for p in run.path.iterdir()) == sorted(RUN_FILES + (COMPLETE_MARKER,))
    info = run.info
    image, label = lung
    assert info["inputs"]["images"]["ct"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert info["inputs"]["segmentation"]["path"] == str(label.resolve())
    assert info["bundle"]["fingerprint"] == bundle.fingerprint
    assert info["units"]["predicted"] == "log10(1+x) of FPKM-UQ"
    assert info["markers"][:2] == ["IDH1", "EGFR"] and info["settings"]["fold_indices"] == [0, 1]
    assert {"read_s", "preprocess_s", "models_s", "write_s", "total_s"} <= set(info["timings"])
    slices = run.slices
    assert slices.images.shape == (5, 1, 224, 224) and info["slices"] == 5
    tokens = run.tokens(1)
    assert tokens.dtype == np.float16 and tokens.shape == (5, 196, bundle.config.hidden_size)
    # the saved tokens are the fold model's, to half precision
    expected, _ = TorchFoldRunner(bundle, 1, torch.device("cpu")).run(slices.images)
    np.testing.assert_allclose(tokens.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    # the tumour mask on the study's own grid
    tumour, reference = run.tumour, sitk.ReadImage(str(image))
    assert tumour.GetSize() == reference.GetSize()
    np.testing.assert_allclose(tumour.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert sitk.GetArrayViewFromImage(tumour).sum() > 0
    # the table that --out got is the run's
    pd.testing.assert_frame_equal(pd.read_csv(predicted / "genes.csv"),
                                  pd.read_csv(run.path / "genes.csv"))


def test_map_from_a_moved_run_equals_the_predicted_map(predicted, tmp_path, run_cli):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(predicted / "genes.run", moved)
    code, out, err = run_cli("map", "--run", moved, "--gene", "egfr", "--gene",
                             "ENSG00000000007", "--out", tmp_path / "maps")
    assert code == 0, err
    assert "2 map(s) from 2 fold model(s)" in out
    for name in ("EGFR", "G7"):
        again = sitk.ReadImage(str(tmp_path / "maps" / f"{name}.nrrd"))
        first = sitk.ReadImage(str(predicted / "maps" / f"{name}.nrrd"))
        np.testing.assert_allclose(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(first),
                                   atol=1e-5)
        assert again.GetOrigin() == first.GetOrigin() and again.GetSpacing() == first.GetSpacing()


def test_a_map_from_the_run_is_the_fold_models_token_values(predicted, bundle):
    """Half-precision tokens through the head rows give the float32 models' maps."""
    run, bundle_again = open_run(predicted / "genes.run")
    genes = map_gene_indices(bundle, ["KRAS"])
    maps = run_maps(run, bundle_again, ["KRAS"])
    x = torch.from_numpy(run.slices.images)[None]
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    token_values = []
    with torch.no_grad():
        for fold in range(2):
            model = bundle.model(fold)
            token_values.append(model.token_values(x, mask, genes)[0, :, 0].numpy())
    from RadioGenomicsLib.maps import values_to_volume

    expected = sitk.GetArrayFromImage(values_to_volume(np.mean(token_values, axis=0), run.slices,
                                                       empty=np.nan))
    got = sitk.GetArrayFromImage(maps["KRAS"])
    painted = np.isfinite(expected) & np.isfinite(got)
    assert painted.sum() > 200  # the tumour voxels on the 5 encoded slabs
    np.testing.assert_allclose(got[painted], expected[painted], rtol=0, atol=5e-3)
    assert np.corrcoef(got[painted], expected[painted])[0, 1] > 0.9999


def test_the_cohort_path_goes_through_the_same_run(predicted, tmp_path, bundle, lung, run_cli):
    image, label = lung
    pd.DataFrame({"patient_id": ["TCGA-AA-0001"], "ct": [image],
                  "segmentation": [label]}).to_csv(tmp_path / "cohort.csv", index=False)
    code, _, err = run_cli("predict", "--model", bundle.path, "--manifest",
                           tmp_path / "cohort.csv", "--out", tmp_path / "out", "--runs",
                           tmp_path / "runs", "--device", "cpu")
    assert code == 0, err
    single = pd.read_csv(predicted / "genes.csv")
    cohort = pd.read_csv(tmp_path / "out" / "TCGA-AA-0001.csv")
    assert single["gene_id"].tolist() == cohort["gene_id"].tolist()
    np.testing.assert_allclose(cohort["predicted"], single["predicted"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cohort["lower"], single["lower"], rtol=1e-6, atol=1e-6)
    kept, _ = open_run(tmp_path / "runs" / "TCGA-AA-0001")
    np.testing.assert_array_equal(kept.tokens(0), open_run(predicted / "genes.run")[0].tokens(0))
    # without --runs nothing of the runs stays behind
    code, _, _ = run_cli("predict", "--model", bundle.path, "--manifest", tmp_path / "cohort.csv",
                         "--out", tmp_path / "out2", "--device", "cpu", "--folds", "first")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == [
        COMPLETE_MARKER, "TCGA-AA-0001.csv", "predictions.tsv"]


def test_a_run_whose_bundle_changed_is_refused(predicted, bundle, tmp_path, run_cli):
    changed = tmp_path / "bundle"
    shutil.copytree(bundle.path, changed)
    genes = (changed / "genes.tsv").read_text().replace("EGFR", "EGFX")
    (changed / "genes.tsv").write_text(genes)
    write_manifest(changed)  # consistent in itself (else its manifest refuses it first)
    code, out, err = run_cli("map", "--run", predicted / "genes.run", "--model", changed,
                             "--gene", "KRAS", "--out", tmp_path / "maps")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "is not the bundle that made the run" in err
    assert not (tmp_path / "maps").exists()


def test_weights_changed_after_the_run_are_checked_again(predicted, bundle, tmp_path, run_cli):
    moved = tmp_path / "bundle"
    shutil.copytree(bundle.path, moved)  # new mtimes: the weights are hashed again (and pass)
    code, _, err = run_cli("map", "--run", predicted / "genes.run", "--model", moved,
                           "--gene", "KRAS", "--out", tmp_path / "ok")
    assert code == 0, err
    weights = moved / "fold_1.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, _, err = run_cli("map", "--run", predicted / "genes.run", "--model", moved,
                           "--gene", "KRAS", "--out", tmp_path / "bad")
    assert code == 2 and "checksum mismatch" in err and "fold_1.safetensors" in err


def test_a_run_never_replaces_what_it_did_not_make(bundle, lung, tmp_path):
    image, label = lung
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    inputs = StudyInputs({"ct": image}, label)
    with pytest.raises(InputError, match="is not a prediction run: refusing to replace it"):
        predict_study(bundle, inputs, folder, "cpu", "first")
    assert (folder / "mine.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="not a prediction run: no run.json"):
        open_run(folder)


def test_a_second_run_replaces_the_first(bundle, lung, tmp_path):
    image, label = lung
    inputs = StudyInputs({"ct": image}, label)
    first = predict_study(bundle, inputs, tmp_path / "run", "cpu", "first")
    second = predict_study(bundle, inputs, tmp_path / "run", "cpu", "all")
    assert first.folds == [0] and second.folds == [0, 1]
    again, _ = open_run(tmp_path / "run")
    assert again.folds == [0, 1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial left


def test_an_incomplete_run_is_refused(predicted, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(predicted / "genes.run", broken)
    os.remove(broken / "tokens.safetensors")
    with pytest.raises(InputError, match="incomplete prediction run: no tokens.safetensors"):
        open_run(broken)
    info = json.loads((predicted / "genes.run" / "run.json").read_text())
    info["format_version"] = 99
    shutil.copytree(predicted / "genes.run", tmp_path / "newer")
    (tmp_path / "newer" / "run.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="run format 99"):
        open_run(tmp_path / "newer", load_bundle(info["bundle"]["path"]))


# ---------------------------------------------------------------- maps a radiologist reads


def _tumour_slices(tumour: np.ndarray) -> np.ndarray:
    return np.flatnonzero(tumour.any(axis=(1, 2)))


def test_maps_are_empty_outside_the_tumour_and_cover_every_tumour_slice(predicted):
    run, _ = open_run(predicted / "genes.run")
    tumour = sitk.GetArrayFromImage(run.tumour) > 0
    egfr = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted / "maps" / "EGFR.nrrd")))
    assert np.isnan(egfr[~tumour]).all()
    assert np.isfinite(egfr[tumour]).all()
    # the model saw 5 slices (1 mm slabs), the tumour spans more of the study's slices
    covered = sitk.GetArrayFromImage(values_to_volume_of(run)) > 0
    seen = np.flatnonzero((covered & tumour).any(axis=(1, 2)))
    assert len(seen) < len(_tumour_slices(tumour))
    # interpolated between tokens, not blocks: far more distinct values than tokens
    k = seen[0]
    assert len(np.unique(egfr[k][tumour[k]])) > 4 * len(np.unique(np.round(
        run_tokens_of_slice(run), 6)))


def values_to_volume_of(run):
    from RadioGenomicsLib.maps import values_to_volume

    ones = np.ones((len(run.slices.images), 14, 14), np.float32)
    return values_to_volume(ones, run.slices)


def run_tokens_of_slice(run):
    """The tokens of the map's first slab that lie over the tumour: how many block
    values a map without interpolation would show."""
    return run.slices.tumour[0].reshape(14, 16, 14, 16).max(axis=(1, 3)).nonzero()[0]


def test_without_filling_only_the_encoded_slabs_have_values(predicted, bundle):
    run, _ = open_run(predicted / "genes.run")
    tumour = sitk.GetArrayFromImage(run.tumour) > 0
    gaps = sitk.GetArrayFromImage(run_maps(run, bundle, ["EGFR"], fill_gaps=False)["EGFR"])
    filled = sitk.GetArrayFromImage(run_maps(run, bundle, ["EGFR"])["EGFR"])
    reached = np.isfinite(gaps)
    assert reached.any() and not reached[tumour].all() and not reached[~tumour].any()
    np.testing.assert_array_equal(gaps[reached], filled[reached])


def test_map_margin_extends_the_map_by_that_many_mm(predicted, tmp_path, run_cli):
    from scipy.ndimage import distance_transform_edt

    code, _, err = run_cli("map", "--run", predicted / "genes.run", "--gene", "EGFR",
                           "--map-margin", "4", "--out", tmp_path)
    assert code == 0, err
    image = sitk.ReadImage(str(tmp_path / "EGFR.nrrd"))
    values = sitk.GetArrayFromImage(image)
    tumour = sitk.GetArrayFromImage(open_run(predicted / "genes.run")[0].tumour) > 0
    distance = distance_transform_edt(~tumour, sampling=image.GetSpacing()[::-1])
    assert np.isfinite(values[distance <= 4]).all() and np.isnan(values[distance > 4]).all()
    assert (np.isfinite(values) & ~tumour).sum() > 1000
    code, _, err = run_cli("map", "--run", predicted / "genes.run", "--gene", "EGFR",
                           "--map-margin", "-1", "--out", tmp_path)
    assert code == 2 and "--map-margin -1.0" in err


def test_the_map_picture_colours_only_the_tumour(predicted, tmp_path, bundle):
    from RadioGenomicsLib.run import save_run_picture

    png = predicted / "maps.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run, _ = open_run(predicted / "genes.run")
    maps = run_maps(run, bundle, ["EGFR", "G7"])
    panels = save_run_picture(run, maps, tmp_path / "again.png")
    # the lung tumour lies on 3 of the study's 5 mm slices: each gene on all three
    assert [p["gene"] for p in panels] == ["EGFR"] * 3 + ["G7"] * 3
    assert [p["position_mm"] for p in panels[:3]] == pytest.approx([-617.5, -612.5, -607.5])
    assert [p["axes"].get_title() for p in panels[:1]] == ["EGFR  -617.5 mm"]
    total, outside = coloured_outside_outline(png, [p["box"] for p in panels])
    assert total > 2000 and outside < 0.002 * total
    # the check can fail: with a 10 mm margin the colours spill over the outline
    wide = run_maps(run, bundle, ["EGFR"], margin_mm=10)
    panels = save_run_picture(run, wide, tmp_path / "wide.png")
    total, outside = coloured_outside_outline(tmp_path / "wide.png", [p["box"] for p in panels])
    assert outside > 0.2 * total
