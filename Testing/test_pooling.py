"""Patient-level pooling of the gene head: mean, gated attention and the tumour's mean
token beside HE2RNA's top-k."""

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
    """A model of 2 input channels; tumour pooling reads the second as the tumour mask."""
    torch.manual_seed(seed)
    config = dataclasses.replace(SMALL, pooling=pooling, attention_dim=16)
    return GenePredictor(config, 2, GENES,
                         tumour_channel=1 if pooling == "tumour" else None).eval()


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
    x = x.clone()
    x[:, :, 1] = (x[:, :, 1] > 0.5).float()  # a mask for tumour pooling
    for pooling in ("topk", "mean", "attention", "tumour"):
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
    with pytest.raises(InputError,
                       match=r"pooling: 'max' is not one of \['topk', 'mean', 'attention', 'tumour'\]"):
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
    assert np.nanmin(attention) >= 0 and np.nanmax(attention) > 0  # NaN outside the tumour
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
    painted = (expected != 0) & np.isfinite(got)  # maps are NaN outside the tumour
    assert painted.sum() > 200
    np.testing.assert_allclose(got[painted], expected[painted], atol=5e-3)


def tumour_slices(n_slices: int = 2) -> torch.Tensor:
    """(1, S, 2, 224, 224): noise in the image channel; the tumour mask channel covers
    the 16-px patches of rows 2-4, columns 3-6 of the token grid in full, and half of the
    patch at (8, 8) (its left 8 columns)."""
    x = torch.randn(1, n_slices, 2, 224, 224, generator=torch.Generator().manual_seed(2))
    x[:, :, 1] = 0
    x[:, :, 1, 32:80, 48:112] = 1
    x[:, :, 1, 128:144, 128:136] = 1
    return x


def test_tumour_pooling_averages_the_tumour_tokens_by_their_share():
    """Tumour pooling: each token weighs its patch's share of the mask channel (1 inside,
    1/2 at a half-covered patch, 0 outside); tokens outside the tumour change nothing."""
    config = dataclasses.replace(SMALL, pooling="tumour", dropout=0.0)
    torch.manual_seed(0)
    model = GenePredictor(config, 2, GENES, tumour_channel=1).eval()
    x, mask = tumour_slices(), torch.ones(1, 2, dtype=torch.bool)
    shares = model.token_shares(x)
    grid = shares.reshape(2, 14, 14)
    assert grid[:, 2:5, 3:7].eq(1).all() and grid[:, 8, 8].eq(0.5).all()
    assert grid.sum() == 2 * (12 + 0.5)
    with torch.no_grad():
        tokens = model.encode(x, mask)
        values = model.predict_genes(tokens, mask, token_shares=shares)[0]
        flat, weights = tokens[0].reshape(-1, config.hidden_size), shares.reshape(-1)
        embedding = weights @ flat / weights.sum()
        expected = model.head.conv.weight[:, :, 0] @ embedding + model.head.conv.bias
        torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(x, mask)[0], values)
        outside = tokens.clone()
        outside[0, :, :14 * 2] += 5.0  # rows 0-1 of the grid: no tumour there
        torch.testing.assert_close(
            model.predict_genes(outside, mask, token_shares=shares)[0], values)
        inside = tokens.clone()
        inside[0, :, 2 * 14 + 3] += 5.0  # a token inside the tumour moves the value
        moved = model.predict_genes(inside, mask, token_shares=shares)[0]
        plain_mean = model.head.conv.weight[:, :, 0] @ flat.mean(0) + model.head.conv.bias
    assert (moved - values).abs().max() > 1e-3
    assert (plain_mean - values).abs().max() > 1e-3  # not the mean over the whole crop
    with pytest.raises(ValueError, match="share of tumour"):
        model.predict_genes(tokens, mask)
    with pytest.raises(ValueError, match="tumour mask as an input channel"):
        GenePredictor(config, 2, GENES)


def test_tumour_pooling_keeps_its_mask_channel_with_the_weights():
    config = dataclasses.replace(SMALL, pooling="tumour")
    saved = GenePredictor(config, 3, GENES, tumour_channel=2).state_dict()
    assert int(saved["tumour_channel"]) == 2
    loaded = GenePredictor(config, 3, GENES, tumour_channel=0)
    loaded.load_state_dict(saved)
    assert int(loaded.tumour_channel) == 2
    assert "tumour_channel" not in GenePredictor(SMALL, 3, GENES).state_dict()


def test_stem_texture_tokens_pool_to_the_stem_maps_mean_and_sd_across_the_tumour():
    """A stem-texture token appends its patch's mean m of each stem map and m**2; the
    pooled value is the gene layer on [tumour mean token, tumour mean of m, tumour SD of
    m]; the map keeps that SD on every token, so its tumour mean is the value."""
    config = dataclasses.replace(SMALL, pooling="tumour", dropout=0.0, stem_texture=True)
    torch.manual_seed(0)
    model = GenePredictor(config, 2, GENES, tumour_channel=1).eval()
    hidden, maps_c = config.hidden_size, config.resnet_width
    x, mask = tumour_slices(), torch.ones(1, 2, dtype=torch.bool)
    shares = model.token_shares(x)
    with torch.no_grad():
        tokens = model.encode(x, mask)
        stem = model.encoder.cnn[:3](x[0])  # (2, C, 112, 112): conv1, norm, activation
        values = model.predict_genes(tokens, mask, token_shares=shares)[0]
        maps = model.gene_maps(tokens, list(range(GENES)), shares)[0]
    assert tokens.shape == (1, 2, 196, hidden + 2 * maps_c) == (1, 2, 196, config.token_size)
    patch_means = stem.reshape(2, maps_c, 14, 8, 14, 8).mean(dim=(3, 5))
    m = patch_means.flatten(2).transpose(1, 2)  # (2, 196, C)
    torch.testing.assert_close(tokens[0, ..., hidden:hidden + maps_c], m, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tokens[0, ..., hidden + maps_c:], m * m, rtol=1e-4, atol=1e-5)
    w = shares.reshape(-1).double() / shares.sum()
    flat = tokens[0].reshape(-1, config.token_size).double()
    mean_m = w @ flat[:, hidden:hidden + maps_c]
    sd_m = torch.sqrt(w @ (flat[:, hidden:hidden + maps_c] - mean_m) ** 2)
    assert sd_m.min() > 1e-3  # noise in the image: the stem's maps vary inside the tumour
    embedding = torch.cat([w @ flat[:, :hidden], mean_m, sd_m])
    expected = model.head.conv.weight[:, :, 0].double() @ embedding + model.head.conv.bias
    torch.testing.assert_close(values.double(), expected, rtol=1e-4, atol=1e-4)
    map_mean = (maps.permute(1, 0, 2, 3).reshape(GENES, -1).double() * w).sum(dim=1)
    torch.testing.assert_close(map_mean, values.double(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="share of tumour"):
        model.gene_maps(tokens, [0])


def test_core_texture_adds_the_stem_sd_over_the_tumours_core():
    """`core_texture`: a core token has its patch and 8 neighbours all tumour (row 3,
    columns 4-5 of the test tumour's 3 x 4 block); the embedding appends m's SD over the
    core tokens; numpy gives the same weights; a tumour one token thin has no core and
    falls back to all its tokens."""
    from RadioGenomicsLib.model.config import CORE_TRACE
    from RadioGenomicsLib.model.head import core_shares
    from RadioGenomicsLib.runtime.head import core_shares as numpy_core_shares

    config = dataclasses.replace(SMALL, pooling="tumour", dropout=0.0, stem_texture=True,
                                 core_texture=True)
    assert config.embedding_size == config.token_size + config.resnet_width
    torch.manual_seed(0)
    model = GenePredictor(config, 2, GENES, tumour_channel=1).eval()
    hidden, maps_c = config.hidden_size, config.resnet_width
    x, mask = tumour_slices(), torch.ones(1, 2, dtype=torch.bool)
    shares = model.token_shares(x)
    core = core_shares(shares, 14)
    core_grid = core.reshape(2, 14, 14)
    assert core_grid[:, 3, 4:6].eq(1 + CORE_TRACE).all()
    assert core_grid[:, 2, 3].eq(CORE_TRACE).all() and core_grid[:, 8, 8].eq(CORE_TRACE / 2).all()
    assert core_grid.sum() == pytest.approx(2 * (2 + CORE_TRACE * 12.5))
    np.testing.assert_allclose(numpy_core_shares(shares[0].numpy(), 14), core[0].numpy())
    with torch.no_grad():
        tokens = model.encode(x, mask)
        values = model.predict_genes(tokens, mask, token_shares=shares)[0]
        maps = model.gene_maps(tokens, list(range(GENES)), shares)[0]
    flat = tokens[0].reshape(-1, config.token_size).double()
    m = flat[:, hidden:hidden + maps_c]

    def weighted_sd(weights):
        w = weights.reshape(-1).double() / weights.sum()
        return torch.sqrt(w @ (m - w @ m) ** 2)

    w = shares.reshape(-1).double() / shares.sum()
    core_sd = weighted_sd(core)
    assert (core_sd - weighted_sd(shares)).abs().max() > 1e-3
    embedding = torch.cat([w @ flat[:, :hidden], w @ m, weighted_sd(shares), core_sd])
    expected = model.head.conv.weight[:, :, 0].double() @ embedding + model.head.conv.bias
    torch.testing.assert_close(values.double(), expected, rtol=1e-4, atol=1e-4)
    map_mean = (maps.permute(1, 0, 2, 3).reshape(GENES, -1).double() * w).sum(dim=1)
    torch.testing.assert_close(map_mean, values.double(), rtol=1e-4, atol=1e-4)
    thin = torch.zeros(2, 196)
    thin[:, 30:34] = 1  # one row of four tokens: no core
    torch.testing.assert_close(core_shares(thin, 14), CORE_TRACE * thin)


def test_core_texture_needs_stem_texture_and_tumour_pooling():
    assert not dataclasses.replace(SMALL, pooling="tumour", stem_texture=True,
                                   core_texture=True).problems()
    for pooling, stem in (("tumour", False), ("mean", True)):
        problems = dataclasses.replace(SMALL, pooling=pooling, stem_texture=stem,
                                       core_texture=True).problems()
        assert problems and "core_texture needs stem_texture and tumour pooling" in problems[-1]
    with pytest.raises(InputError, match="core_texture"):
        ModelConfig.from_dict({**SMALL.to_dict(), "core_texture": 1})


def test_stem_texture_needs_a_pooled_head():
    assert not dataclasses.replace(SMALL, pooling="mean", stem_texture=True).problems()
    problems = dataclasses.replace(SMALL, stem_texture=True).problems()  # top-k
    assert problems and "stem_texture needs a pooled head" in problems[0]
    with pytest.raises(InputError, match="stem_texture"):
        ModelConfig.from_dict({**SMALL.to_dict(), "stem_texture": "yes"})


def test_the_token_cache_tells_stem_texture_tokens_apart():
    """Same encoder weights, wider tokens: the frozen-token cache must not serve one
    model's tokens to the other."""
    from RadioGenomicsLib.training.frozen import encoder_key

    plain, texture = model_with("mean"), GenePredictor(
        dataclasses.replace(SMALL, pooling="mean", attention_dim=16, stem_texture=True), 2, GENES)
    texture.encoder.load_state_dict(plain.encoder.state_dict())
    assert encoder_key(plain) == encoder_key(model_with("mean"))
    assert encoder_key(plain) != encoder_key(texture)
