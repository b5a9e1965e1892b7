"""Patient-level pooling of the gene head: mean and gated attention beside HE2RNA's top-k."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.model import GenePredictor, ModelConfig
from RadioGenomicsLib.training.loop import in_target_units

SMALL = ModelConfig.preset("small")
GENES = 7


def model_with(pooling: str, seed: int = 0) -> GenePredictor:
    torch.manual_seed(seed)
    config = dataclasses.replace(SMALL, pooling=pooling, attention_dim=16)
    return GenePredictor(config, 2, GENES).eval()


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 2, 224, 224)
    mask = torch.tensor([[True, True, True], [True, True, False]])  # patient 2: 2 slices
    return x, mask


def token_values(model, tokens, mask):
    """(B, S*T, genes) value of every gene on every token, and the token mask."""
    maps = model.gene_maps(tokens, list(range(GENES)))  # (B, S, genes, grid, grid)
    values = maps.permute(0, 1, 3, 4, 2).reshape(tokens.shape[0], -1, GENES)
    token_mask = mask[:, :, None].expand(-1, -1, tokens.shape[2]).reshape(tokens.shape[0], -1)
    return values, token_mask


@torch.no_grad()
def test_mean_pooling_is_the_mean_of_the_token_maps(inputs):
    model = model_with("mean")
    x, mask = inputs
    tokens = model.encode(x, mask)
    values, token_mask = token_values(model, tokens, mask)
    expected = torch.stack([values[b][token_mask[b]].mean(dim=0) for b in range(2)])
    torch.testing.assert_close(model.predict_genes(tokens, mask), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_attention_weights_the_token_maps_and_ignores_padding(inputs):
    model = model_with("attention")
    x, mask = inputs
    tokens = model.encode(x, mask)
    weights = model.attention_maps(tokens, mask)  # (B, S, grid, grid)
    assert weights.shape == (2, 3, 14, 14)
    torch.testing.assert_close(weights.sum(dim=(1, 2, 3)), torch.ones(2))
    assert (weights[1, 2] == 0).all()  # the padding slice gets no weight
    values, _ = token_values(model, tokens, mask)
    expected = torch.einsum("bn,bng->bg", weights.reshape(2, -1), values)
    torch.testing.assert_close(model.predict_genes(tokens, mask), expected, rtol=1e-5, atol=1e-5)
    # padding changes nothing: patient 2 alone gives the same values
    alone = model.predict_genes(model.encode(x[1:, :2], mask[1:, :2]), mask[1:, :2])
    torch.testing.assert_close(alone[0], model.predict_genes(tokens, mask)[1], rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="has no attention"):
        model_with("mean").attention_maps(tokens, mask)


def test_standardised_weights_convert_back_exactly_for_every_pooling(inputs):
    x, mask = inputs
    rng = np.random.default_rng(0)
    mean, std = rng.normal(2, 1, GENES).astype(np.float32), rng.uniform(0.2, 3, GENES).astype(np.float32)
    for pooling in ("topk", "mean", "attention"):
        model = model_with(pooling)
        with torch.no_grad():
            standardised = model(x, mask)
            model.load_state_dict(in_target_units(model.state_dict(), mean, std))
            converted = model(x, mask)
        torch.testing.assert_close(converted, standardised * torch.from_numpy(std)
                                   + torch.from_numpy(mean), rtol=1e-4, atol=1e-4)


def test_gradients_reach_the_attention(inputs):
    model = model_with("attention").train()
    x, mask = inputs
    loss = model(x, mask).pow(2).mean()
    loss.backward()
    for name in ("attention.value.weight", "attention.gate.weight", "attention.score.weight",
                 "head.conv.weight"):
        gradient = dict(model.named_parameters())[name].grad
        assert gradient is not None and gradient.abs().sum() > 0, name


def test_pooling_is_a_checked_setting():
    assert ModelConfig.preset("paper").pooling == "topk"  # the paper's method stays the default
    # refused by the settings' schema (schemas.MODEL) before the config is built
    with pytest.raises(InputError, match=r"pooling: 'max' is not one of \['topk', 'mean', 'attention'\]"):
        ModelConfig.from_dict({**SMALL.to_dict(), "pooling": "max"})
    config = ModelConfig.from_dict({**SMALL.to_dict(), "pooling": "attention"})
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_an_attention_bundle_predicts_and_maps_from_its_run(tmp_path, testdata, run_cli):
    """Through the bundle, the prediction run and `map`: the gene maps and the attention
    map (where the model looked) on the study's grid."""
    import pandas as pd
    import SimpleITK as sitk

    from RadioGenomicsLib.bundle import make_untrained_bundle
    from RadioGenomicsLib.preprocess import PreprocessSettings
    from RadioGenomicsLib.run import TorchFoldRunner, open_run

    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}.1" for i in range(GENES)],
                          "gene_name": ["EGFR"] + [f"G{i}" for i in range(1, GENES)]})
    config = dataclasses.replace(SMALL, pooling="attention", attention_dim=16)
    bundle = make_untrained_bundle(tmp_path / "att", config, ["ct"], genes,
                                   PreprocessSettings(max_slices=3).to_dict(), folds=2)
    image, label = (testdata / "pyradiomics" / f"lung1_{n}.nrrd" for n in ("image", "label"))
    code, out, err = run_cli("predict", "--model", bundle.path, "--image", f"ct={image}",
                             "--segmentation", label, "--out", tmp_path / "genes.csv",
                             "--device", "cpu")
    assert code == 0, err
    assert "attention pooling" in " ".join(run_cli("info", bundle.path)[1].split())
    code, _, err = run_cli("map", "--run", tmp_path / "genes.run", "--gene", "EGFR",
                           "--attention", "--out", tmp_path / "maps")
    assert code == 0, err
    attention = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "maps" / "attention.nrrd")))
    assert attention.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape
    assert attention.min() >= 0 and attention.max() > 0
    # the map's weights are the models' own attention (float16 tokens: to 1 %)
    run, _ = open_run(tmp_path / "genes.run")
    x = torch.from_numpy(run.slices.images)[None]
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        expected = np.mean([bundle.model(f).attention_maps(bundle.model(f).encode(x, mask), mask)
                            [0].numpy() for f in range(2)], axis=0)
    from RadioGenomicsLib.run import _attention_weights

    got = np.mean([_attention_weights(bundle, f, run.tokens(f)) for f in range(2)], axis=0)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=0.02,
                               atol=1e-3 / expected.size)
    table = pd.read_csv(tmp_path / "genes.csv")
    values = TorchFoldRunner(bundle, 0, torch.device("cpu")).run(run.slices.images)[1]
    assert len(table) == GENES and np.isfinite(values).all()
    code, _, err = run_cli("map", "--run", tmp_path / "genes.run", "--out", tmp_path / "none")
    assert code == 2 and "--attention" in err


# ---------------------------------------------------------------- geometry from the mask


def test_geometry_adds_a_linear_share_and_converts_exactly(inputs):
    x, mask = inputs
    config = dataclasses.replace(SMALL, pooling="mean", geometry=True)
    torch.manual_seed(3)
    model = GenePredictor(config, 2, GENES).eval()
    rng = np.random.default_rng(4)
    model.set_geometry_scale(rng.normal(size=(20, 4)) * [1, 2, 3, 4] + 5)
    with torch.no_grad():
        model.head.geometry.weight.normal_()
        geometry = torch.from_numpy(rng.normal(size=(2, 4)).astype(np.float32)) + 5
        tokens = model.encode(x, mask)
        plain = model.predict_genes(tokens, mask, geometry * 0 + model.geometry_mean)
        shifted = model.predict_genes(tokens, mask, geometry)
        expected = model.head.geometry((geometry - model.geometry_mean) / model.geometry_std)
        torch.testing.assert_close(shifted - plain, expected, rtol=1e-4, atol=1e-4)
        mean, std = rng.normal(2, 1, GENES).astype(np.float32), rng.uniform(0.5, 2, GENES).astype(np.float32)
        model.load_state_dict(in_target_units(model.state_dict(), mean, std))
        torch.testing.assert_close(model.predict_genes(tokens, mask, geometry),
                                   shifted * torch.from_numpy(std) + torch.from_numpy(mean),
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs \\(B, 4\\) geometry"):
        model.predict_genes(tokens, mask)


def test_a_frozen_head_learns_size_only_with_geometry():
    """Tokens that say nothing of size (rescaled crops): with geometry the head predicts a
    volume-linked gene on new patients; without it, it cannot."""
    from RadioGenomicsLib.training.frozen import (FrozenTokens, fit_head_fold, frozen_encoder,
                                                  predict_tokens)
    from RadioGenomicsLib.training.recipe import load_recipe

    rng = np.random.default_rng(5)
    patients = [f"P{i}" for i in range(80)]
    tokens = {p: rng.normal(size=(2, 196, SMALL.hidden_size)).astype(np.float16) for p in patients}
    geometry = {p: np.r_[rng.normal(-1, 0.2), rng.normal(6, 1, 3)].astype(np.float32)
                for p in patients}
    volume = np.array([geometry[p][3] for p in patients])
    targets = np.c_[2.0 * volume + rng.normal(0, 0.3, 80)].astype(np.float32)

    class Part:
        def __init__(self, index):
            self.patients = [patients[i] for i in index]
            self.targets = targets[index]

    results = {}
    for with_geometry in (True, False):
        recipe = load_recipe("small")
        config = dataclasses.replace(SMALL, pooling="mean", geometry=with_geometry)
        recipe = dataclasses.replace(recipe, model=config, training=dataclasses.replace(
            recipe.training, encoder="frozen", head_epochs=150, head_patience=20,
            head_learning_rate=1e-2, batch_patients=8))
        frozen = FrozenTokens(frozen_encoder(recipe, 1, 1), tokens, geometry)
        best, _ = fit_head_fold(recipe, 0, frozen, Part(range(45)), Part(range(45, 55)))
        model = GenePredictor(config, 1, 1)
        model.load_state_dict(best)
        predicted = predict_tokens(model, frozen, patients[55:], 8)[:, 0]
        results[with_geometry] = np.corrcoef(predicted, targets[55:, 0])[0, 1]
    assert results[True] > 0.9 and results[False] < 0.5, results


def test_a_geometry_bundle_predicts_and_its_maps_carry_the_geometry_share(tmp_path, testdata,
                                                                          run_cli):
    import pandas as pd
    import SimpleITK as sitk

    from RadioGenomicsLib.bundle import BundleMetadata, write_bundle
    from RadioGenomicsLib.maps import values_to_volume
    from RadioGenomicsLib.preprocess import PreprocessSettings
    from RadioGenomicsLib.run import open_run

    config = dataclasses.replace(SMALL, pooling="mean", geometry=True)
    torch.manual_seed(8)
    model = GenePredictor(config, 1, GENES)
    model.set_geometry_scale(np.random.default_rng(1).normal(size=(10, 4)) + [-1, 5, 3, 1])
    with torch.no_grad():
        model.head.geometry.weight.normal_(0, 2)
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}.1" for i in range(GENES)],
                          "gene_name": ["EGFR"] + [f"G{i}" for i in range(1, GENES)],
                          "train_mean": 1.0, "train_std": 1.0, "validation_r": np.nan,
                          "validation_p_adj": np.nan})
    metadata = BundleMetadata(["ct"], PreprocessSettings(max_slices=3).to_dict(), config)
    path = write_bundle(tmp_path / "geo", [model.state_dict()], metadata, genes)
    image, label = (testdata / "pyradiomics" / f"lung1_{n}.nrrd" for n in ("image", "label"))
    code, _, err = run_cli("predict", "--model", path, "--image", f"ct={image}", "--segmentation",
                           label, "--out", tmp_path / "genes.csv", "--device", "cpu",
                           "--maps", tmp_path / "maps", "--map-gene", "EGFR")
    assert code == 0, err
    run, _ = open_run(tmp_path / "genes.run")
    geometry = torch.tensor([run.info["geometry"]])
    assert np.allclose(run.info["geometry"], run.slices.geometry())
    x = torch.from_numpy(run.slices.images)[None]
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    model.eval()
    with torch.no_grad():
        tokens = model.encode(x, mask)
        value = model.predict_genes(tokens, mask, geometry)[0, 0]
        shift = model.geometry_shift(geometry, 1)[0, 0]
        token_values = model.gene_maps(tokens, [0])[0, :, 0].numpy() + float(shift)
    assert abs(float(shift)) > 0.1  # the geometry moves the value
    table = pd.read_csv(tmp_path / "genes.csv").set_index("gene_name")
    assert table.loc["EGFR", "predicted"] == pytest.approx(float(value), abs=1e-4)
    expected = sitk.GetArrayFromImage(values_to_volume(token_values, run.slices))
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "maps" / "EGFR.nrrd")))
    painted = expected != 0
    np.testing.assert_allclose(got[painted], expected[painted], atol=5e-3)
