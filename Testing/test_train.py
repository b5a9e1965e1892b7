"""Cross-validated training on a small synthetic cohort: bundle, report, resume, DDP, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file

from RadioGenomicsLib.bundle import load_bundle
from RadioGenomicsLib.run import open_run
from RadioGenomicsLib.runtime.head import GeometryShift
from RadioGenomicsLib.training.cache import SliceCache
from RadioGenomicsLib.training.data import batch_tensors

PATIENTS, GENES = 12, 40

# a tiny model of the same shape, so that a cross-validation takes seconds on a CPU
RECIPE = {
    "name": "test-tiny",
    "base": "small",
    "model": {"resnet_width": 16, "norm_groups": 8, "resnet_layers": [1, 1, 1],
              "hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64,
              "dropout": 0.0, "head_dropout": 0.0},
    "preprocessing": {"max_slices": 3},
    "training": {"folds": 3, "epochs": 3, "patience": 3, "batch_patients": 4,
                 "train_slices": 2, "learning_rate": 1e-3},
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from RadioGenomicsLib.cli import main

    out = tmp_path_factory.mktemp("synth") / "cohort"
    assert main(["synth", "--out", str(out), "--patients", str(PATIENTS), "--genes", str(GENES),
                 "--seed", "5", "--jobs", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, cohort):
    folder = tmp_path_factory.mktemp("train")
    recipe = folder / "recipe.json"
    recipe.write_text(json.dumps(RECIPE))
    return {"recipe": recipe, "cache": folder / "cache", "folder": folder}


def train_args(cohort: Path, workspace: dict, out: Path, *extra: str) -> list[str]:
    return ["train", "--manifest", str(cohort / "manifest.csv"),
            "--expression", str(cohort / "expression"),
            "--sample-sheet", str(cohort / "gdc_sample_sheet.tsv"), "--out", str(out),
            "--config", str(workspace["recipe"]), "--cache", str(workspace["cache"]),
            "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def trained(cohort, workspace) -> Path:
    from RadioGenomicsLib.cli import main

    out = workspace["folder"] / "bundle"
    assert main(train_args(cohort, workspace, out)) == 0
    return out


def test_bundle_and_report(trained):
    bundle = load_bundle(trained)
    assert bundle.folds == 3 and bundle.channels == ["t1", "t1gd", "t2", "flair"]
    summary = json.loads((trained / "report" / "summary.json").read_text())
    assert summary["patients"] == PATIENTS and summary["folds"] == 3
    assert summary["genes"] == len(bundle.genes) <= GENES
    for key in ("significant_genes_0.05", "significant_genes_0.01", "pearson_mean",
                "pearson_median", "pearson_min", "pearson_max", "per_fold"):
        assert key in summary
    stats = pd.read_csv(trained / "report" / "gene_stats.tsv", sep="\t")
    np.testing.assert_allclose(bundle.genes["validation_r"], stats["pearson_r"], atol=1e-9)
    assert (trained / "report" / "pearson_hist.png").stat().st_size > 10_000
    assert (trained / "report" / "model_card.png").stat().st_size > 10_000
    assert not Path(str(trained) + ".work").exists()  # checkpoints removed when done
    meta = json.loads((trained / "metadata.json").read_text())
    assert meta["target"] == {"transform": "log10(1+x)", "units": "FPKM-UQ"}
    assert meta["training_cohort"]["patients"] == PATIENTS


def test_every_patient_predicted_by_the_fold_that_never_saw_it(trained, cohort, workspace):
    """Re-predict patients with their own fold's model from the bundle: the OOF values."""
    from RadioGenomicsLib.cohort import validate_cohort
    from RadioGenomicsLib.preprocess import PreprocessSettings
    from RadioGenomicsLib.training.cache import patient_key
    from RadioGenomicsLib.training.folds import assign_folds

    bundle = load_bundle(trained)
    oof = pd.read_csv(trained / "report" / "oof_predictions.tsv", sep="\t", index_col=0)
    assert oof.shape == (PATIENTS, len(bundle.genes))
    assert list(oof.columns) == bundle.genes["gene_id"].tolist()
    folds = assign_folds(list(oof.index), 3, 0)
    models = bundle.models("cpu")
    manifest = validate_cohort(cohort / "manifest.csv")
    settings = PreprocessSettings.from_dict(bundle.metadata.preprocessing)
    cache = SliceCache(workspace["cache"])
    for patient in oof.index[:4]:
        key = patient_key(manifest.loc[patient], bundle.channels, settings)
        x, mask = batch_tensors([np.asarray(cache.load(key), np.float32)])
        with torch.no_grad():
            values = [model(x, mask).numpy()[0] for model in models]
        fold = int(folds[patient])
        expected = oof.loc[patient].to_numpy()
        np.testing.assert_allclose(values[fold], expected, rtol=1e-4, atol=1e-4)
        assert all(np.abs(v - expected).max() > 1e-4 for i, v in enumerate(values) if i != fold)


def test_resume_after_a_kill_ends_with_the_same_bundle(cohort, workspace, trained, monkeypatch):
    from RadioGenomicsLib.cli import main
    from RadioGenomicsLib.training import loop

    out = workspace["folder"] / "resumed"
    calls = {"n": 0}
    real_save = loop.save_checkpoint

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # fold 2, epoch 2 of 3: killed mid-fold
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", dying_save)
    assert main(train_args(cohort, workspace, out)) == 130
    assert not out.exists() and Path(str(out) + ".work").exists()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert main(train_args(cohort, workspace, out, "--resume")) == 0
    for fold in range(3):
        first = load_file(trained / f"fold_{fold}.safetensors")
        again = load_file(out / f"fold_{fold}.safetensors")
        assert first.keys() == again.keys()
        for key in first:
            torch.testing.assert_close(again[key], first[key], rtol=0, atol=0)
    assert (json.loads((out / "report" / "summary.json").read_text())
            == json.loads((trained / "report" / "summary.json").read_text()))


def test_two_processes_match_one(cohort, workspace, trained):
    out = workspace["folder"] / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RADIOGENOMICS_PROGRESS": "lines"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "29517", "-m", "RadioGenomicsLib",
               *train_args(cohort, workspace, out)]
    result = subprocess.run(command, env=env, capture_output=True, encoding="utf-8",
                            errors="replace", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    single = pd.read_csv(trained / "report" / "oof_predictions.tsv", sep="\t", index_col=0)
    double = pd.read_csv(out / "report" / "oof_predictions.tsv", sep="\t", index_col=0)
    # Adam turns rounding noise in near-zero gradients into +-lr steps: equal to ~1 %
    np.testing.assert_allclose(double.to_numpy(), single.to_numpy(), rtol=0.03)
    assert np.corrcoef(double.to_numpy().ravel(), single.to_numpy().ravel())[0, 1] > 0.999


def test_sharded_batches_give_the_full_batch_gradient(cohort, workspace, trained):
    """What DDP averages over two processes equals one process's gradient on the batch."""
    from RadioGenomicsLib.model import GenePredictor
    from RadioGenomicsLib.training.data import PatientSlices
    from RadioGenomicsLib.training.loop import Runtime, _train_epoch
    from RadioGenomicsLib.training.recipe import load_recipe

    recipe = load_recipe(workspace["recipe"]).with_training(batch_patients=5)
    cache = SliceCache(workspace["cache"])
    slices = sorted(p for p in cache.folder.glob("*.npy") if not p.name.endswith(".geometry.npy"))
    keys = {f"p{i}": path.stem for i, path in enumerate(slices[:5])}
    targets = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    data = PatientSlices(cache, keys, targets, list(keys))

    def gradient(rank: int, world: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = GenePredictor(recipe.model, 4, 7)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the weights
        _train_epoch(model, optimizer, data, recipe, np.random.default_rng(1),
                     Runtime(torch.device("cpu"), rank, world))
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    full = gradient(0, 1)
    shared = (gradient(0, 2) + gradient(1, 2)) / 2  # what DDP's all-reduce computes
    # float rounding only: a wrong loss scale would be off by a factor of 2 or 5/3
    torch.testing.assert_close(shared, full, rtol=1e-3, atol=1e-4 * float(full.abs().max()))


def _copy_cohort(cohort: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(cohort, target)
    return target


@pytest.mark.parametrize("case, message", [
    ("folds", "fewer than the 13 folds"),
    ("empty_segmentation", "the segmentation is empty"),
    ("no_genes", "no gene is left"),
    ("resume_other_settings", "checkpoint was made with other settings"),
    ("permutations_of_a_trained_model", "needs a closed-form head"),
    ("too_few_permutations", "permutations 18: 0 or at least 19"),
])
def test_bad_input_fails_at_the_start(tmp_path, cohort, workspace, run_cli, case, message):
    data = cohort
    extra: list[str] = []
    if case == "folds":
        extra = ["--folds", "13"]
    elif case == "empty_segmentation":
        data = _copy_cohort(cohort, tmp_path / "cohort")
        segmentation = next((data / "images").rglob("*_seg.nii.gz"))
        image = sitk.ReadImage(str(segmentation))
        sitk.WriteImage(image * 0, str(segmentation))
    elif case == "no_genes":
        data = _copy_cohort(cohort, tmp_path / "cohort")
        for star in (data / "expression").rglob("*.tsv"):
            lines = star.read_text().splitlines()
            head, genes = lines[:6], lines[6:]
            zeroed = ["\t".join(row.split("\t")[:3] + ["0"] * 6) for row in genes]
            star.write_text("\n".join(head + zeroed) + "\n")
    elif case == "resume_other_settings":
        from RadioGenomicsLib.training.checkpoint import FoldState, save_checkpoint

        from RadioGenomicsLib.outputs import mark_complete

        save_checkpoint(tmp_path / "bundle.work" / "fold_0.safetensors", "other settings",
                        FoldState(epoch=1), {}, {}, {"state": {}, "param_groups": []})
        mark_complete(tmp_path / "bundle.work", "train")  # train's own work folder
        extra = ["--resume"]
    elif case == "permutations_of_a_trained_model":
        extra = ["--permutations", "200"]
    elif case == "too_few_permutations":
        extra = ["--permutations", "18"]
    out = tmp_path / "bundle"
    code, _, stderr = run_cli(*train_args(data, workspace, out, *extra))
    errors = [line for line in stderr.replace("\r", "\n").splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], stderr[-500:]
    assert not out.exists()


def test_pretrained_encoder_is_where_training_starts(tmp_path, cohort, workspace, run_cli):
    """With a learning rate of ~0 the trained encoder is the imported TransUNet encoder."""
    from RadioGenomicsLib.model import GenePredictor
    from RadioGenomicsLib.pretrained import load_transunet_weights
    from RadioGenomicsLib.training.recipe import load_recipe
    from Testing.test_pretrained import checkpoint_shapes

    model = RECIPE["model"]
    shapes = checkpoint_shapes(model["resnet_width"], tuple(model["resnet_layers"]),
                               model["hidden_size"], model["num_heads"], model["mlp_dim"],
                               layers=2, grid=14)
    rng = np.random.default_rng(0)
    npz = tmp_path / "R50+ViT-B_16.npz"
    np.savez(npz, **{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()})
    recipe = tmp_path / "frozen.json"
    recipe.write_text(json.dumps({**RECIPE, "training": {**RECIPE["training"], "epochs": 1,
                                                         "learning_rate": 1e-12}}))
    out = tmp_path / "bundle"
    args = train_args(cohort, {**workspace, "recipe": recipe}, out, "--pretrained", str(npz))
    code, _, stderr = run_cli(*args)
    assert code == 0, stderr[-500:]
    expected = GenePredictor(load_recipe(recipe).model, 4, 1)
    load_transunet_weights(expected, npz)
    trained = load_file(out / "fold_0.safetensors")
    for name, value in expected.encoder.state_dict().items():
        torch.testing.assert_close(trained[f"encoder.{name}"], value, rtol=1e-5, atol=1e-6)

    broken = tmp_path / "broken.npz"
    np.savez(broken, **{k: v for k, v in np.load(npz).items() if "block2" not in k})
    args[args.index(str(npz))] = str(broken)
    args[args.index(str(out))] = str(tmp_path / "other")
    code, _, stderr = run_cli(*args)
    errors = [line for line in stderr.replace("\r", "\n").splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "broken.npz" in errors[0]
    assert not (tmp_path / "other").exists()


def test_standardised_weights_convert_exactly_to_target_units():
    """A model trained on z-scores, converted, predicts std * z + mean for every gene,
    padded slices included (the top-k mean commutes with a positive scale and a shift)."""
    from RadioGenomicsLib.model import GenePredictor, ModelConfig
    from RadioGenomicsLib.training.loop import in_target_units, target_scale

    torch.manual_seed(3)
    config = ModelConfig.from_dict({**RECIPE["model"], "name": "tiny"})
    standardised = GenePredictor(config, 4, 6).eval()
    targets = np.random.default_rng(0).normal([0, 2, 5, -1, 3, 7], [1, 0.1, 3, 0, 2, 0.5], (20, 6))
    mean, std = target_scale(targets)
    assert std[3] == 1.0 and np.allclose(std[[0, 2]], targets.std(0)[[0, 2]], rtol=1e-6)
    converted = GenePredictor(config, 4, 6).eval()
    converted.load_state_dict(in_target_units(standardised.state_dict(), mean, std))
    x = torch.randn(2, 3, 4, 224, 224)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    with torch.no_grad():
        z, values = standardised(x, mask), converted(x, mask)
    torch.testing.assert_close(values, z * torch.from_numpy(std) + torch.from_numpy(mean),
                               rtol=1e-5, atol=1e-5)
    assert z.std(0).max() > 1e-3  # patients differ: the check is not trivially constant


def test_standardised_training_ships_weights_in_target_units(tmp_path, cohort, workspace, trained):
    """`small` trains on z-scores; its bundle predicts at the genes' level, as one trained
    on the raw values (HE2RNA's loss, random k) does."""
    from RadioGenomicsLib.cli import main

    recipe = tmp_path / "recipe.json"
    settings = {**RECIPE, "training": {**RECIPE["training"], "standardize_targets": False,
                                       "random_top_k": True}}
    recipe.write_text(json.dumps(settings))
    out = tmp_path / "bundle"
    args = train_args(cohort, {**workspace, "recipe": recipe}, out)
    assert main(args) == 0
    oof = pd.read_csv(out / "report" / "oof_predictions.tsv", sep="\t", index_col=0)
    raw = pd.read_csv(trained / "report" / "oof_predictions.tsv", sep="\t", index_col=0)
    genes = load_bundle(out).genes.set_index("gene_id")
    # predictions sit at the genes' training level (log10 FPKM-UQ), not around z = 0
    assert np.abs(oof.mean() - genes.loc[oof.columns, "train_mean"]).max() < \
        3 * genes["train_std"].max()
    assert np.corrcoef(oof.mean(), raw.mean())[0, 1] > 0.95
    assert not np.allclose(oof.to_numpy(), raw.to_numpy(), rtol=1e-3)


def test_the_frozen_encoder_mode_ships_its_encoder_and_the_fold_heads(tmp_path, cohort, workspace):
    """Two stages: one frozen encoder shared by every fold, heads trained on its tokens
    (attention pooling, early stopping on the validation loss, refit); the bundle's fold
    models give the out-of-fold values again from the slices."""
    from RadioGenomicsLib.cli import main
    from RadioGenomicsLib.cohort import validate_cohort
    from RadioGenomicsLib.preprocess import PreprocessSettings
    from RadioGenomicsLib.training.cache import patient_key
    from RadioGenomicsLib.training.folds import assign_folds

    recipe = dict(RECIPE, model={**RECIPE["model"], "pooling": "attention", "attention_dim": 8},
                  training={**RECIPE["training"], "encoder": "frozen", "head_epochs": 40,
                            "head_patience": 5, "standardize_targets": True})
    (tmp_path / "frozen.json").write_text(json.dumps(recipe))
    out = tmp_path / "frozen"
    assert main(train_args(cohort, dict(workspace, recipe=tmp_path / "frozen.json"), out)) == 0
    bundle = load_bundle(out)
    states = [load_file(out / f"fold_{f}.safetensors") for f in range(3)]
    for name in states[0]:
        same = all(torch.equal(states[0][name], s[name]) for s in states[1:])
        assert same == name.startswith("encoder."), name  # the encoder is shared, heads not
    history = pd.read_csv(out / "report" / "training_history.tsv", sep="\t")
    assert {"loss", "validation_loss"} <= set(history.columns)
    assert (history.groupby("fold")["epoch"].max() < 40).any()  # early stopping happened
    oof = pd.read_csv(out / "report" / "oof_predictions.tsv", sep="\t", index_col=0)
    folds = assign_folds(list(oof.index), 3, 0)
    manifest = validate_cohort(cohort / "manifest.csv")
    settings = PreprocessSettings.from_dict(bundle.metadata.preprocessing)
    cache = SliceCache(workspace["cache"])
    for patient in oof.index[:3]:
        key = patient_key(manifest.loc[patient], bundle.channels, settings)
        x, mask = batch_tensors([np.asarray(cache.load(key), np.float32)])
        with torch.no_grad():
            value = bundle.model(int(folds[patient]))(x, mask).numpy()[0]
        # the OOF came from float16 tokens, the bundle re-encodes in float32
        np.testing.assert_allclose(value, oof.loc[patient].to_numpy(), rtol=0, atol=2e-3)


def test_a_head_on_frozen_tokens_learns_what_the_tokens_carry():
    """Synthetic tokens whose mean carries two genes' values: the head trained on them
    predicts new patients (r > 0.9), and the refit uses every training patient."""
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.training.frozen import fit_head_fold, predict_tokens
    from RadioGenomicsLib.training.recipe import load_recipe

    rng = np.random.default_rng(0)
    config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(), **RECIPE["model"],
                                    "pooling": "mean"})
    recipe = load_recipe("small")
    recipe = dataclass_replace(recipe, model=config, training=dataclass_replace(
        recipe.training, encoder="frozen", head_epochs=200, head_patience=20,
        head_learning_rate=1e-2, batch_patients=8))
    patients = [f"P{i}" for i in range(90)]
    signal = rng.normal(size=(90, 2))
    tokens = {}
    for i, p in enumerate(patients):
        t = rng.normal(size=(3, 196, 32)).astype(np.float16)
        t[..., :2] += signal[i].astype(np.float16)  # the tokens' mean carries the signal
        tokens[p] = t
    targets = np.c_[signal @ [[1.0], [0.5]], rng.normal(size=(90, 1))].astype(np.float32)
    geometry = {p: rng.normal(size=4).astype(np.float32) for p in patients}

    from RadioGenomicsLib.training.frozen import FrozenTokens, frozen_encoder

    frozen = FrozenTokens(frozen_encoder(recipe, 1, 2), tokens, geometry)
    best, state = fit_head_fold(recipe, 0, frozen, fold_part(patients, targets, range(50)),
                                fold_part(patients, targets, range(50, 60)))
    model = model_from_state(recipe, best)
    predicted = predict_tokens(model, frozen, patients[60:], 8)
    assert np.corrcoef(predicted[:, 0], targets[60:, 0])[0, 1] > 0.9
    assert abs(np.corrcoef(predicted[:, 1], targets[60:, 1])[0, 1]) < 0.5
    assert 0 <= state.best_epoch < len(state.history) <= 200


def fold_part(patients, targets, index):
    """What fit_head_fold and fit_ridge_head read of a fold part: its patients and targets."""
    from types import SimpleNamespace

    return SimpleNamespace(patients=[patients[i] for i in index],
                           targets=np.asarray(targets[index], np.float32))


def dataclass_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def model_from_state(recipe, state):
    from RadioGenomicsLib.model import GenePredictor

    model = GenePredictor(recipe.model, 1, state["head.conv.bias"].shape[0])
    model.load_state_dict(state)
    return model


def fit_ridge_and_reference(recipe, frozen, patients, targets, fitted=50, columns=slice(None)):
    """fit_ridge_head on the first `fitted` patients (the last 5 of them for validation),
    and sklearn's RidgeCV on their standardised pooled tokens [and geometry] (`columns` of
    them): (weights, state, what RidgeCV predicts for the patients after them)."""
    from sklearn.linear_model import RidgeCV

    from RadioGenomicsLib.training.frozen import RIDGE_ALPHAS, fit_ridge_head, patient_features

    best, state = fit_ridge_head(recipe, 0, frozen,
                                 fold_part(patients, targets, range(fitted - 5)),
                                 fold_part(patients, targets, range(fitted - 5, fitted)))
    x = patient_features(frozen, patients[:fitted], recipe.model)[:, columns]
    centre, scale = x.mean(0), x.std(0)
    ridge = RidgeCV(alphas=np.asarray(RIDGE_ALPHAS), alpha_per_target=True).fit(
        (x - centre) / scale, targets[:fitted])
    return best, state, ridge.predict(
        (patient_features(frozen, patients[fitted:], recipe.model)[:, columns] - centre) / scale)


def mean_ridge_recipe():
    """The test encoder (RECIPE's) frozen, mean pooling with geometry, the ridge head."""
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.training.recipe import load_recipe

    config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(), **RECIPE["model"],
                                    "pooling": "mean", "geometry": True})
    recipe = load_recipe("small")
    return dataclass_replace(recipe, model=config, training=dataclass_replace(
        recipe.training, encoder="frozen", head_solver="ridge"))


def test_the_ridge_head_is_the_ridge_written_into_the_model():
    """Closed-form head: the GenePredictor's values are exactly the ridge's predictions on
    new patients (mean token and geometry, standardised), and it learns the signal."""
    from RadioGenomicsLib.training.frozen import FrozenTokens, frozen_encoder, predict_tokens

    rng = np.random.default_rng(2)
    recipe = mean_ridge_recipe()
    patients = [f"P{i}" for i in range(70)]
    signal = rng.normal(size=70)
    shift = np.zeros(32)
    tokens = {}
    for i, p in enumerate(patients):
        shift[0] = signal[i]  # the first feature of every token carries the signal
        tokens[p] = (rng.normal(size=(2, 196, 32)) + shift).astype(np.float16)
    geometry = {p: rng.normal(3, 2, 4).astype(np.float32) for p in patients}
    volume = np.array([geometry[p][3] for p in patients])
    targets = np.c_[signal + rng.normal(0, 0.3, 70), volume, rng.normal(size=70)]

    frozen = FrozenTokens(frozen_encoder(recipe, 1, 3), tokens, geometry)
    best, state, expected = fit_ridge_and_reference(recipe, frozen, patients, targets)
    model = model_from_state(recipe, best)
    predicted = predict_tokens(model, frozen, patients[50:], 8)
    np.testing.assert_allclose(predicted, expected, rtol=1e-3, atol=1e-3)
    assert np.corrcoef(predicted[:, 0], targets[50:, 0])[0, 1] > 0.8  # from the tokens
    assert np.corrcoef(predicted[:, 1], targets[50:, 1])[0, 1] > 0.9  # from the geometry
    assert state.history[0]["patients"] == 50  # training and validation patients both


def test_the_permutation_null_refits_the_ridge_head_as_training_does():
    """ridge_oof, which the permutation test re-runs on shuffled rows, predicts each
    fold's patients as the fold model that fit_ridge_head writes (trained on the other
    folds' training and validation patients) predicts them from the tokens."""
    from RadioGenomicsLib.training.frozen import (FrozenTokens, fit_ridge_head, frozen_encoder,
                                                  patient_features, predict_tokens, ridge_oof,
                                                  ridge_starts)

    rng = np.random.default_rng(8)
    recipe = mean_ridge_recipe()
    patients = [f"P{i}" for i in range(60)]
    signal = rng.normal(size=60)
    tokens = {p: (rng.normal(size=(2, 196, 32)) + np.r_[signal[i], np.zeros(31)])
              .astype(np.float16) for i, p in enumerate(patients)}
    geometry = {p: rng.normal(3, 2, 4).astype(np.float32) for p in patients}
    targets = np.c_[signal + rng.normal(0, 0.5, 60), rng.normal(size=(60, 2))]
    frozen = FrozenTokens(frozen_encoder(recipe, 1, 3), tokens, geometry)
    folds = np.arange(60) % 3
    expected = np.empty_like(targets)
    for fold in range(3):
        others = np.flatnonzero(folds != fold)
        best, _ = fit_ridge_head(recipe, fold, frozen, fold_part(patients, targets, others[:-4]),
                                 fold_part(patients, targets, others[-4:]))
        held_out = np.flatnonzero(folds == fold)
        expected[held_out] = predict_tokens(model_from_state(recipe, best), frozen,
                                            [patients[i] for i in held_out], 8)
    x = patient_features(frozen, patients, recipe.model).astype(np.float64)
    predicted = ridge_oof(x, targets, folds, ridge_starts(recipe))
    np.testing.assert_allclose(predicted, expected, rtol=1e-3, atol=1e-3)
    assert np.corrcoef(predicted[:, 0], targets[:, 0])[0, 1] > 0.6


def test_the_ridge_head_with_tumour_pooling_reads_the_tumour_tokens_only():
    """Tumour pooling: the ridge fits the share-weighted mean token, the model written
    from it predicts the same on new patients, and a signal that only the tumour's tokens
    carry (the crop's margin holds 6x more noise) is found; the whole-crop mean misses it."""
    from RadioGenomicsLib.model import GenePredictor, ModelConfig
    from RadioGenomicsLib.training.frozen import (FrozenTokens, frozen_encoder,
                                                  patient_features, predict_tokens)
    from RadioGenomicsLib.training.recipe import load_recipe

    rng = np.random.default_rng(3)
    config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(), **RECIPE["model"],
                                    "pooling": "tumour"})
    base = load_recipe("small")
    recipe = dataclass_replace(
        base, model=config,
        preprocessing=dataclass_replace(base.preprocessing, tumour_channel=True),
        training=dataclass_replace(base.training, encoder="frozen", head_solver="ridge"))
    patients = [f"P{i}" for i in range(70)]
    signal = rng.normal(size=70)
    share = np.zeros((2, 196), np.float32)
    share[:, :20] = 1.0
    share[:, 20:30] = 0.5  # the tumour's edge
    tokens, shares = {}, {}
    for i, p in enumerate(patients):
        stack = rng.normal(size=(2, 196, 32))
        stack[:, :30, 0] += signal[i]  # in the tumour only
        stack[:, 30:, 0] += rng.normal(0, 6, size=(2, 166)).mean() * 6  # margin noise
        tokens[p], shares[p] = stack.astype(np.float16), share
    targets = np.c_[signal + rng.normal(0, 0.3, 70), rng.normal(size=70)]

    geometry = {p: np.zeros(4, np.float32) for p in patients}  # not read: no geometry
    frozen = FrozenTokens(frozen_encoder(recipe, 2, 2), tokens, geometry, shares)
    best, _, expected = fit_ridge_and_reference(recipe, frozen, patients, targets)
    model = GenePredictor(config, 2, 2, tumour_channel=1)
    model.load_state_dict(best)
    predicted = predict_tokens(model, frozen, patients[50:], 8)
    np.testing.assert_allclose(predicted, expected, rtol=1e-3, atol=1e-3)
    assert np.corrcoef(predicted[:, 0], targets[50:, 0])[0, 1] > 0.8
    whole_crop = FrozenTokens(frozen.encoder, tokens, geometry)
    whole_crop_config = dataclass_replace(config, pooling="mean")
    mean_feature = patient_features(whole_crop, patients, whole_crop_config)[:, 0]
    assert abs(np.corrcoef(mean_feature, signal)[0, 1]) < 0.5  # the margin drowns it


def test_mask_channels_and_fusion_train_predict_and_report(tmp_path, cohort, workspace, run_cli):
    """A frozen ridge model reading the tumour and BraTS sub-region masks as channels, with
    the tumour's 3-D shape, its intensities and each sub-region's volume and share in its
    geometry: its bundle takes 4 + 4 channels and 4 + 4 + 7 + 6 geometry values and
    predicts a study from the files (torch and the light head alike); the fusion method's
    report lies beside the model's, on the same patients and genes."""
    recipe = dict(RECIPE, model={**RECIPE["model"], "pooling": "mean", "geometry": True},
                  preprocessing={**RECIPE["preprocessing"], "tumour_channel": True,
                                 "region_labels": [1, 2, 4], "region_geometry": True,
                                 "shape_geometry": True, "intensity_geometry": True},
                  training={**RECIPE["training"], "encoder": "frozen", "head_solver": "ridge",
                            "fusion": True})
    (tmp_path / "masks.json").write_text(json.dumps(recipe))
    out = tmp_path / "masks"
    code, _, stderr = run_cli(*train_args(cohort, dict(workspace, recipe=tmp_path / "masks.json"),
                                          out, "--permutations", "19"))
    assert code == 0, stderr[-800:]
    for report in ("report", "fusion-report"):  # both methods' own permutation test
        summary = json.loads((out / report / "summary.json").read_text())
        stats = pd.read_csv(out / report / "gene_stats.tsv", sep="\t")
        assert summary["permutations"] == 19 and -1 < summary["null_max_r_95"] < 1
        assert stats["p_perm"].between(1 / 20, 1).all()
        assert summary["permutation_significant_genes_0.05"] == int(
            ((stats["p_perm"] <= 0.05) & (stats["pearson_r"] > 0)).sum())
    weights = load_file(out / "fold_0.safetensors")
    assert weights["encoder.cnn.conv1.weight"].shape[1] == 8
    assert weights["geometry_mean"].shape == (21,)
    assert weights["head.geometry.weight"].shape[1] == 21
    assert weights["head.geometry.weight"][:, 4:].abs().sum() > 0  # the ridge uses them
    model = pd.read_csv(out / "report" / "oof_predictions.tsv", sep="\t", index_col=0)
    fusion = pd.read_csv(out / "fusion-report" / "oof_predictions.tsv", sep="\t", index_col=0)
    assert list(fusion.index) == list(model.index) and list(fusion.columns) == list(model.columns)
    assert not np.allclose(fusion.to_numpy(), model.to_numpy())

    row = pd.read_csv(cohort / "manifest.csv").iloc[0]
    images = [f"--image={c}={cohort / row[c]}" for c in ("t1", "t1gd", "t2", "flair")]
    code, _, stderr = run_cli("predict", "--model", str(out), *images, "--segmentation",
                              str(cohort / row["segmentation"]), "--out", str(tmp_path / "g.csv"),
                              "--device", "cpu")
    assert code == 0, stderr[-800:]
    table = pd.read_csv(tmp_path / "g.csv")
    assert len(table) == len(model.columns)
    # the bundle keeps the model's permutation p; it, not Holm-Sidak, flags reliable genes
    genes = pd.read_csv(out / "genes.tsv", sep="\t").set_index("gene_id")
    tested = pd.read_csv(out / "report" / "gene_stats.tsv", sep="\t").set_index("gene_id")
    np.testing.assert_allclose(genes["validation_p_perm"], tested.loc[genes.index, "p_perm"])
    expected = (genes["validation_p_perm"] <= 0.05) & (genes["validation_r"] > 0)
    assert table.set_index("gene_id")["reliable"].loc[genes.index].tolist() == expected.tolist()
    run, bundle = open_run(tmp_path / "g.run")
    geometry = np.asarray(run.info["geometry"], np.float32)
    assert geometry.shape == (21,) and np.allclose(geometry, run.slices.geometry())
    assert 0 < geometry[4] <= 1.05 and geometry[7] > 0  # roundness, log(1 + surface)
    # the tumour's z-scored T1: SD > 0, percentiles in order around the median
    assert geometry[9] > 0 and geometry[10] <= geometry[11] <= geometry[12] <= geometry[13] \
        <= geometry[14] and geometry[10] < geometry[14]
    assert np.isclose(geometry[16] + geometry[18] + geometry[20], 1.0, atol=0.02)  # shares
    fold = bundle.model(0)
    with torch.no_grad():
        shift = fold.geometry_shift(torch.from_numpy(geometry)[None], 1)[0].numpy()
    light = GeometryShift.from_safetensors(out / "fold_0.safetensors")(geometry)
    np.testing.assert_allclose(light, shift, rtol=1e-4, atol=1e-5)


def test_the_slice_cache_keeps_one_key_for_sub_region_geometry(tmp_path):
    """region_geometry changes no pixel: the same key (the tokens encoded for it stay
    valid); an entry with 4 geometry values is preprocessed again for a reader of 10, and
    a reader of 4 takes the first 4 of a longer one."""
    from RadioGenomicsLib.preprocess import PreprocessSettings
    from RadioGenomicsLib.training.cache import patient_key

    row = pd.Series({"t1": str(tmp_path / "t1.nii.gz"), "segmentation": str(tmp_path / "s.nii")})
    for name in ("t1.nii.gz", "s.nii"):
        (tmp_path / name).write_bytes(b"x")
    keys = {patient_key(row, ["t1"], PreprocessSettings(region_labels=(1, 2, 4),
                                                        region_geometry=on)) for on in (0, 1)}
    assert len(keys) == 1
    key, images = keys.pop(), np.zeros((2, 1, 4, 4), np.float32)
    SliceCache(tmp_path / "c").store(key, images, np.arange(4, dtype=np.float32))
    assert SliceCache(tmp_path / "c").holds(key) and not SliceCache(tmp_path / "c", 10).holds(key)
    SliceCache(tmp_path / "c", 10).store(key, images, np.arange(10, dtype=np.float32))
    np.testing.assert_array_equal(SliceCache(tmp_path / "c").geometry(key), np.arange(4))
    assert SliceCache(tmp_path / "c", 10).geometry(key).shape == (10,)


def test_bundles_before_sub_region_geometry_keep_4_geometry_values(tmp_path):
    """A bundle whose settings name region labels but not region_geometry (every bundle
    written before it) builds, loads and runs the 4-value geometry it was trained with."""
    from RadioGenomicsLib.bundle import make_untrained_bundle
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.preprocess import PreprocessSettings
    from RadioGenomicsLib.training.recipe import load_recipe

    genes = pd.DataFrame({"gene_id": ["ENSG00000146648.18"], "gene_name": ["EGFR"]})
    config = ModelConfig.from_dict({**load_recipe("frozen-ridge-brats").model.to_dict(),
                                    **RECIPE["model"]})
    for region_geometry, count in ((False, 4), (True, 10)):
        settings = PreprocessSettings(tumour_channel=True, region_labels=(1, 2, 4),
                                      region_geometry=region_geometry).to_dict()
        bundle = make_untrained_bundle(tmp_path / f"b{count}", config, ["t1"], genes, settings)
        fold = bundle.model(0)
        assert fold.n_geometry == count and fold.geometry_mean.shape == (count,)
        values = fold.predict_genes(torch.zeros(1, 1, 4, 32), torch.ones(1, 1, dtype=torch.bool),
                                    torch.zeros(1, count))
        assert values.shape == (1, 1)
        with pytest.raises(ValueError, match=f"{count}\\) geometry values"):
            fold.predict_genes(torch.zeros(1, 1, 4, 32), torch.ones(1, 1, dtype=torch.bool),
                               torch.zeros(1, 14 - count))


def test_fusion_stacks_the_embedding_and_the_radiomics_inside_the_folds(monkeypatch):
    """One gene carried by the embedding, one by a radiomic feature: the fused ridge
    predicts both out of fold; the model alone (embedding) only the first."""
    from RadioGenomicsLib.training import baseline
    from RadioGenomicsLib.training.crossval import TrainingInputs, fusion_features, fusion_oof
    from RadioGenomicsLib.training.frozen import FrozenTokens
    from RadioGenomicsLib.training.recipe import load_recipe

    rng = np.random.default_rng(4)
    patients = [f"P{i}" for i in range(60)]
    a, b = rng.normal(size=60), rng.normal(size=60)
    tokens = {p: (rng.normal(size=(2, 4, 8)) + np.r_[a[i], np.zeros(7)]).astype(np.float16)
              for i, p in enumerate(patients)}
    frozen = FrozenTokens(None, tokens, {p: np.zeros(4, np.float32) for p in patients})
    radiomics = pd.DataFrame({"shape_x": b + rng.normal(0, 0.1, 60),
                              "noise": rng.normal(size=60)}, index=patients)
    monkeypatch.setattr(baseline, "cohort_features", lambda *args, **kwargs: radiomics)
    targets = pd.DataFrame({"GA": a + rng.normal(0, 0.3, 60), "GB": b + rng.normal(0, 0.3, 60)},
                           index=patients)
    folds = pd.Series(np.arange(60) % 3, index=patients)
    inputs = TrainingInputs(pd.DataFrame(index=patients), ["t1"], targets, pd.Series(dtype=str),
                            folds, [["GA", "GB"]] * 3, [])
    features = fusion_features(inputs, load_recipe("frozen-ridge"), frozen, "manifest.csv")
    oof = fusion_oof(inputs, features)
    assert list(oof.index) == patients and list(oof.columns) == ["GA", "GB"]
    for gene in ("GA", "GB"):
        assert np.corrcoef(oof[gene], targets[gene])[0, 1] > 0.8
    # out of fold: a held-out patient's own target never enters its prediction
    changed = targets.copy()
    changed.loc["P0", "GA"] += 100
    again = fusion_oof(dataclass_replace(inputs, targets=changed), features)
    assert again.loc["P0", "GA"] == pytest.approx(oof.loc["P0", "GA"])


def test_the_ridge_drops_leading_blocks_per_gene_where_leave_one_out_prefers():
    """per_gene_ridge with several starts: a gene carried by the last 3 columns drops the
    150 noise columns and the 3 before them (zero weights there, a better held-out fit);
    a gene carried by the first columns keeps them; one carried by the middle block keeps
    it and drops the first; with one start it is sklearn's RidgeCV."""
    from sklearn.linear_model import RidgeCV

    from RadioGenomicsLib.training.frozen import RIDGE_ALPHAS, per_gene_ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 156))
    noise = 0.7 * rng.normal(size=(200, 3))
    y = np.c_[x[:, 153], x[:, 0], x[:, 150]] + noise
    train, test = slice(0, 120), slice(120, None)
    coefficients, intercepts, alphas = per_gene_ridge(x[train], y[train], starts=(0, 150, 153))
    assert np.all(coefficients[0, :153] == 0) and abs(coefficients[0, 153]) > 0.5
    assert abs(coefficients[1, 0]) > 0.15  # kept, shrunk by the shared penalty
    assert np.all(coefficients[2, :150] == 0) and abs(coefficients[2, 150]) > 0.5
    full, _, _ = per_gene_ridge(x[train], y[train])
    predicted = x[test] @ coefficients.T + intercepts
    kept = x[test] @ full.T
    assert (np.corrcoef(predicted[:, 0], y[test, 0])[0, 1]
            > np.corrcoef(kept[:, 0], y[test, 0])[0, 1] + 0.02)
    reference = RidgeCV(alphas=np.asarray(RIDGE_ALPHAS), alpha_per_target=True).fit(x[train],
                                                                                   y[train])
    np.testing.assert_allclose(full, reference.coef_, rtol=1e-6, atol=1e-9)
    assert alphas.shape == (3,)


@pytest.mark.parametrize("token_columns, texture_columns",
                         [("per_gene", "always"), ("none", "always"), ("none", "per_gene")])
def test_token_columns_none_keeps_the_transformer_token_out_of_every_genes_fit(
        token_columns, texture_columns):
    """A stem-texture ridge head with token_columns "none": zero weights on the
    transformer token's columns for every gene (a gene that only they carry is lost), the
    written model predicting exactly sklearn's RidgeCV on the texture and geometry; with
    "per_gene" that gene keeps them."""
    from RadioGenomicsLib.model import GenePredictor, ModelConfig
    from RadioGenomicsLib.training.frozen import FrozenTokens, frozen_encoder, predict_tokens
    from RadioGenomicsLib.training.recipe import load_recipe

    rng = np.random.default_rng(4)
    config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(), **RECIPE["model"],
                                    "pooling": "tumour", "geometry": True,
                                    "stem_texture": True})
    base = load_recipe("small")
    recipe = dataclass_replace(
        base, model=config,
        preprocessing=dataclass_replace(base.preprocessing, tumour_channel=True),
        training=dataclass_replace(base.training, encoder="frozen", head_solver="ridge",
                                   token_columns=token_columns,
                                   texture_columns=texture_columns))
    assert recipe.problems() == []
    hidden, stem = config.hidden_size, config.stem_channels
    patients = [f"P{i}" for i in range(90)]
    in_token, in_texture = rng.normal(size=90), rng.normal(size=90)
    share = np.zeros((2, 196), np.float32)
    share[:, :40] = 1.0
    tokens, shares = {}, {}
    for i, p in enumerate(patients):
        stack = rng.normal(size=(2, 196, config.token_size))
        stack[:, :40, 0] += in_token[i]  # a transformer column
        stack[:, :40, hidden] *= np.exp(in_texture[i])  # m's spread across the tumour
        stack[:, :, hidden + stem:] = stack[:, :, hidden:hidden + stem] ** 2
        tokens[p], shares[p] = stack.astype(np.float16), share
    targets = np.c_[in_token + rng.normal(0, 0.3, 90), in_texture + rng.normal(0, 0.3, 90)]
    geometry = {p: rng.normal(size=4).astype(np.float32) for p in patients}
    frozen = FrozenTokens(frozen_encoder(recipe, 2, 2), tokens, geometry, shares)
    best, state, expected = fit_ridge_and_reference(recipe, frozen, patients, targets,
                                                    fitted=60, columns=slice(hidden, None))
    token_weights = best["head.conv.weight"][:, :hidden, 0].abs().sum(dim=1).numpy()
    model = GenePredictor(config, 2, 2, tumour_channel=1)
    model.load_state_dict(best)
    predicted = predict_tokens(model, frozen, patients[60:], 8)
    found = [np.corrcoef(predicted[:, g], targets[60:, g])[0, 1] for g in range(2)]
    assert found[1] > 0.6  # the texture, either way
    if token_columns == "per_gene":
        assert token_weights[0] > 0 and found[0] > 0.6
        return
    assert np.all(token_weights == 0) and abs(found[0]) < 0.5
    assert state.history[0]["genes_without_transformer_token"] == 2
    if texture_columns == "per_gene":  # the texture gene keeps the texture
        texture_weights = best["head.conv.weight"][:, hidden:, 0].abs().sum(dim=1).numpy()
        assert texture_weights[1] > 0
        return
    assert state.history[0]["genes_without_stem_texture"] == 0
    np.testing.assert_allclose(predicted, expected, rtol=1e-3, atol=1e-3)


def test_token_and_texture_columns_need_a_stem_texture_ridge_head(tmp_path):
    """token_columns "none" or texture_columns "per_gene" on a model without stem texture
    (or without the ridge) is refused with one line; unknown values too; the defaults
    leave recipe fingerprints as they were (they are not written)."""
    from RadioGenomicsLib.errors import InputError
    from RadioGenomicsLib.training.recipe import PRESETS, load_recipe

    refused = (  # base, its model and training changed, what the refusal names
        ("frozen-ridge", {}, {"token_columns": "none"}, "token_columns"),
        ("frozen-ridge-ct", {}, {"head_solver": "adamw"}, "token_columns"),
        ("frozen-ridge-ct", {}, {"token_columns": "some"}, "token_columns"),
        ("frozen-ridge", {}, {"texture_columns": "per_gene"}, "texture_columns"),
        ("frozen-ridge-ct", {}, {"texture_columns": "never"}, "texture_columns"),
        ("frozen-ridge-ct", {"geometry": False}, {"texture_columns": "per_gene"},
         "texture_columns"))
    for number, (base, model, training, message) in enumerate(refused):
        path = tmp_path / f"refused{number}.json"
        path.write_text(json.dumps({"base": base, "model": model, "training": training}))
        with pytest.raises(InputError, match=message):
            load_recipe(path)
    assert "token_columns" not in PRESETS["frozen-ridge"].to_dict()["training"]
    assert "texture_columns" not in PRESETS["frozen-ridge"].to_dict()["training"]
    assert PRESETS["frozen-ridge-ct"].to_dict()["training"]["token_columns"] == "none"
