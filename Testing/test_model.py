"""The gene predictor: encoder shape and parts, the top-k head, settings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.model import GeneHead, GenePredictor, ModelConfig, WeightStandardizedConv2d, top_k_mean

SMALL = ModelConfig.preset("small")
CHANNELS, GENES = 2, 5


@pytest.fixture(scope="module")
def model() -> GenePredictor:
    torch.manual_seed(0)
    return GenePredictor(SMALL, CHANNELS, GENES).eval()


def slices(batch: int, n_slices: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_slices, CHANNELS, 224, 224, generator=generator)


def hand_top_k(values: np.ndarray, ks) -> float:
    """Mean over ks of the mean of the k largest values (k capped at the count)."""
    ordered = np.sort(values)[::-1]
    return float(np.mean([ordered[:min(k, len(ordered))].mean() for k in ks]))


# --- encoder ---------------------------------------------------------------------------

def test_paper_setting_is_the_issue_size():
    with torch.device("meta"):
        encoder = GenePredictor(ModelConfig.preset("paper"), 4, 1).encoder
    parameters = sum(p.numel() for p in encoder.parameters())
    assert parameters == pytest.approx(69.5e6, rel=0.002)
    with FlopCounterMode(display=False) as counter:
        encoder(torch.zeros(1, 4, 224, 224, device="meta"))
    assert counter.get_total_flops() == pytest.approx(31.4e9, rel=0.01)


def test_224_slices_give_14x14_tokens(model):
    tokens = model.encode(slices(1, 2), torch.ones(1, 2, dtype=torch.bool))
    assert tokens.shape == (1, 2, 14 * 14, SMALL.hidden_size)
    assert torch.isfinite(tokens).all()


def test_resnet_is_bit_style_groupnorm_and_standardised_convs(model):
    cnn = model.encoder.cnn
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    norms = [m for m in cnn.modules() if isinstance(m, torch.nn.GroupNorm)]
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    blocks = sum(SMALL.resnet_layers)
    assert len(norms) == 1 + 3 * blocks + 3  # stem, three per bottleneck, one per projection
    assert all(n.num_groups == 32 for n in norms)
    assert len(convs) == len(norms) and all(isinstance(c, WeightStandardizedConv2d) for c in convs)


def test_weight_standardisation_is_applied():
    torch.manual_seed(0)
    conv = WeightStandardizedConv2d(4, 8, 3, padding=1)
    x = torch.randn(1, 4, 9, 9)
    w = conv.weight.detach()
    standardised = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(
        w.var(dim=(1, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    expected = F.conv2d(x, standardised, conv.bias, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-5)
    assert not torch.allclose(conv(x), F.conv2d(x, w, conv.bias, padding=1), atol=1e-3)
    with torch.no_grad():  # scale and offset of a filter do not matter
        before = conv(x)
        conv.weight.mul_(7.0).add_(0.3)
        assert torch.allclose(conv(x), before, rtol=1e-2, atol=1e-3)


def test_transformer_dropouts_and_fused_attention(model):
    for block in model.encoder.blocks:
        assert block.attn.use_flash_attention and block.attn.dropout_rate == 0.0
        assert block.attn.drop_output.p == SMALL.dropout
        assert block.mlp.drop1.p == block.mlp.drop2.p == SMALL.dropout
        assert block.norm1.eps == block.norm2.eps == 1e-6
    assert model.encoder.embedding.dropout.p == SMALL.dropout


def test_eval_is_deterministic(model):
    x, mask = slices(1, 2), torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(x, mask), model(x, mask))


def test_wrong_slice_size_is_refused(model):
    with pytest.raises(ValueError, match="224x224"):
        model.encode(torch.zeros(1, 1, CHANNELS, 112, 112), torch.ones(1, 1, dtype=torch.bool))


# --- head ------------------------------------------------------------------------------

def test_top_k_mean_by_hand():
    values = torch.tensor([[[5.0, 1.0, 3.0, -torch.inf, 4.0, 2.0],
                            [0.0, -1.0, 9.0, -torch.inf, -2.0, 1.0]]])
    n_valid = torch.tensor([5])
    result = top_k_mean(values, n_valid, [1, 2, 5])
    assert result[0, 0].item() == pytest.approx((5 + 4.5 + 3) / 3)
    assert result[0, 1].item() == pytest.approx((9 + 5 + 7 / 5) / 3)
    # k beyond the valid count uses them all
    assert top_k_mean(values, n_valid, [10])[0, 0].item() == pytest.approx(3.0)


def test_padded_tokens_are_never_selected():
    head = GeneHead(hidden_size=3, n_genes=2, dropout=0.0)
    tokens = torch.tensor([[[1.0, 0, 0], [2.0, 0, 0], [100.0, 0, 0], [3.0, 0, 0]]])
    mask = torch.tensor([[True, True, False, True]])
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.weight[:, 0, 0] = torch.tensor([1.0, -1.0])
        head.conv.bias.zero_()
        result = head(tokens, mask, ks=[1, 2], memory_mb=1)
    assert result[0, 0].item() == pytest.approx((3 + 2.5) / 2)
    assert result[0, 1].item() == pytest.approx((-1 + -1.5) / 2)


def test_padded_slices_change_nothing(model):
    x = slices(1, 2)
    padded = torch.cat([x, 1e3 * torch.ones(1, 2, CHANNELS, 224, 224)], dim=1)
    mask = torch.tensor([[True, True, False, False]])
    with torch.no_grad():
        alone = model(x, torch.ones(1, 2, dtype=torch.bool))
        with_padding = model(padded, mask)
    assert torch.allclose(alone, with_padding, atol=1e-5)


def test_chunked_head_equals_whole_head():
    torch.manual_seed(0)
    head = GeneHead(hidden_size=16, n_genes=37, dropout=0.0)
    tokens = torch.randn(2, 50, 16)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 30:] = False
    assert head.gene_chunk(2, 50, memory_mb=0.0001) == 1
    with torch.no_grad():
        chunked = head(tokens, mask, ks=[1, 5, 20], memory_mb=0.0001)
        whole = head(tokens, mask, ks=[1, 5, 20], memory_mb=1000)
    assert torch.allclose(chunked, whole, atol=1e-6)


def test_eval_value_is_mean_over_k_list_of_token_values(model):
    x, mask = slices(2, 3, seed=4), torch.tensor([[True, True, True], [True, False, False]])
    with torch.no_grad():
        tokens = model.encode(x, mask)
        predicted = model.predict_genes(tokens, mask).numpy()
        maps = model.gene_maps(tokens, list(range(GENES))).numpy()  # (B, S, G, 14, 14)
    for patient in range(2):
        n = int(mask[patient].sum())
        for gene in range(GENES):
            values = maps[patient, :n, gene].ravel()
            assert predicted[patient, gene] == pytest.approx(hand_top_k(values, SMALL.top_k), rel=1e-4)


def test_training_draws_one_k_per_call():
    torch.manual_seed(0)
    config = dataclasses.replace(SMALL, dropout=0.0, head_dropout=0.0, top_k=(1, 50))
    model = GenePredictor(config, CHANNELS, 1)
    x, mask = slices(1, 1), torch.ones(1, 1, dtype=torch.bool)
    with torch.no_grad():
        tokens = model.encode(x, mask)
        values = model.gene_maps(tokens, [0]).numpy().ravel()
        model.train()
        seen = {round(model.predict_genes(tokens, mask).item(), 4) for _ in range(30)}
    assert seen == {round(hand_top_k(values, [1]), 4), round(hand_top_k(values, [50]), 4)}


def test_whole_top_k_list_in_training_when_not_drawn():
    config = dataclasses.replace(SMALL, dropout=0.0, head_dropout=0.0, top_k=(1, 50))
    torch.manual_seed(0)
    model = GenePredictor(config, CHANNELS, 1).eval()
    x, mask = slices(1, 1), torch.ones(1, 1, dtype=torch.bool)
    with torch.no_grad():
        tokens = model.encode(x, mask)
        values = model.gene_maps(tokens, [0]).numpy().ravel()
        model.train()
        model.draw_top_k = False
        seen = {round(model.predict_genes(tokens, mask).item(), 4) for _ in range(10)}
    assert seen == {round(hand_top_k(values, [1, 50]), 4)}


def test_output_bias_from_training_mean():
    model = GenePredictor(SMALL, CHANNELS, 3).eval()
    mean = np.array([0.5, 2.0, -1.0])
    model.set_output_bias(mean)
    with torch.no_grad():
        model.head.conv.weight.zero_()
        predicted = model(slices(1, 2), torch.ones(1, 2, dtype=torch.bool))
    assert torch.allclose(predicted, torch.from_numpy(mean).float()[None])
    with pytest.raises(ValueError, match="3 values"):
        model.set_output_bias([1.0, 2.0])


def test_maps_and_slice_passes(model):
    x, mask = slices(1, 3), torch.tensor([[True, False, True]])
    with torch.no_grad():
        tokens = model.encode(x, mask)
        assert torch.allclose(model.encode(x, mask, slices_per_pass=1), tokens, atol=1e-5)
        maps = model.token_values(x, mask, [4, 1])
    assert maps.shape == (1, 3, 2, 14, 14)
    assert torch.all(tokens[0, 1] == 0)
    assert torch.allclose(maps[0, 1, 0], model.head.conv.bias[4].expand(14, 14))
    assert torch.allclose(maps[0, 0, 1].reshape(-1),
                          tokens[0, 0] @ model.head.conv.weight[1, :, 0] + model.head.conv.bias[1], atol=1e-5)


def test_channels_last_gives_the_same_values():
    torch.manual_seed(0)
    plain = GenePredictor(SMALL, CHANNELS, GENES).eval()
    fast = GenePredictor(SMALL, CHANNELS, GENES)
    fast.load_state_dict(plain.state_dict())
    fast.prepare_inference(channels_last=True)
    x, mask = slices(1, 1), torch.ones(1, 1, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(plain(x, mask), fast(x, mask), atol=1e-4)


# --- settings --------------------------------------------------------------------------

def test_config_round_trip_and_file(tmp_path):
    assert ModelConfig.from_dict(json.loads(json.dumps(SMALL.to_dict()))) == SMALL
    custom = tmp_path / "tiny.json"
    custom.write_text(json.dumps({"hidden_size": 64, "num_heads": 2, "num_layers": 1}))
    loaded = ModelConfig.load(custom)
    assert (loaded.name, loaded.hidden_size, loaded.num_layers, loaded.mlp_dim) == ("tiny", 64, 1, 3072)
    assert ModelConfig.load("paper") == ModelConfig()


@pytest.mark.parametrize("settings, problem", [
    ({"hidden_size": 100, "num_heads": 12}, "multiple of num_heads"),
    ({"image_size": 200}, "multiple of 16"),
    ({"top_k": []}, "top_k"),
    ({"layers": 8}, "unknown model setting"),
])
def test_bad_config_file(tmp_path, settings, problem):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(InputError, match=problem) as error:
        ModelConfig.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unknown_preset():
    with pytest.raises(InputError, match="neither a model preset"):
        ModelConfig.load("huge")


def test_top_k_without_grad_equals_the_differentiable_path():
    torch.manual_seed(0)
    values = torch.randn(2, 7, 300)
    values[1, :, 250:] = -torch.inf
    n_valid = torch.tensor([300, 250])
    with torch.no_grad():
        fast = top_k_mean(values.clone(), n_valid, [1, 2, 5, 10, 20, 50, 100])
    differentiable = top_k_mean(values.requires_grad_(), n_valid, [1, 2, 5, 10, 20, 50, 100])
    assert torch.allclose(fast, differentiable.detach(), atol=1e-6)
    differentiable.sum().backward()
    assert torch.isfinite(values.grad).all() and (values.grad[1, :, 250:] == 0).all()


def test_bf16_inference_changes_the_transformer_and_head_only(model):
    """set_precision("bf16"): the CNN stays float32 (its features identical), the tokens
    and gene values move by bf16 rounding only (r > 0.999 with float32), and float32 again
    restores the float32 values exactly."""
    torch.manual_seed(1)
    x = torch.randn(1, 2, model.in_channels, 224, 224)
    mask = torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        cnn = model.encoder.cnn(x[0])
        full_tokens = model.encode(x, mask)
        full = model(x, mask)
        model.set_precision("bf16")
        torch.testing.assert_close(model.encoder.cnn(x[0]), cnn, rtol=0, atol=0)
        half_tokens = model.encode(x, mask)
        half = model(x, mask)
        model.set_precision("float32")
        again = model(x, mask)
    assert half_tokens.dtype == torch.float32 and half.dtype == torch.float32
    assert not torch.equal(half_tokens, full_tokens)
    r = np.corrcoef(half_tokens.flatten().numpy(), full_tokens.flatten().numpy())[0, 1]
    assert r > 0.999
    assert np.corrcoef(half.flatten().numpy(), full.flatten().numpy())[0, 1] > 0.999
    torch.testing.assert_close(again, full, rtol=0, atol=0)
