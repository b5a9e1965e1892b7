"""Import of TransUNet's R50+ViT-B_16.npz, tested with an npz of the same keys made here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.model import GenePredictor, ModelConfig
from RadioGenomicsLib.pretrained import load_transunet_weights

SMALL = ModelConfig.preset("small")


def checkpoint_shapes(width: int, units: tuple[int, ...], hidden: int, heads: int, mlp: int,
                      layers: int, grid: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the published ViT jax hybrid checkpoint, for a given size."""
    shapes: dict[str, tuple[int, ...]] = {
        "conv_root/kernel": (7, 7, 3, width), "gn_root/scale": (width,), "gn_root/bias": (width,),
        "embedding/kernel": (1, 1, 16 * width, hidden), "embedding/bias": (hidden,),
        "cls": (1, 1, hidden), "head/kernel": (hidden, 10), "head/bias": (10,),
        "Transformer/posembed_input/pos_embedding": (1, grid * grid + 1, hidden),
        "Transformer/encoder_norm/scale": (hidden,), "Transformer/encoder_norm/bias": (hidden,),
    }
    cin = width
    for stage, count in enumerate(units, start=1):
        mid = width * 2 ** (stage - 1)
        for unit in range(1, count + 1):
            prefix = f"block{stage}/unit{unit}"
            shapes |= {f"{prefix}/conv1/kernel": (1, 1, cin, mid), f"{prefix}/conv2/kernel": (3, 3, mid, mid),
                       f"{prefix}/conv3/kernel": (1, 1, mid, 4 * mid)}
            for gn, channels in (("gn1", mid), ("gn2", mid), ("gn3", 4 * mid)):
                shapes |= {f"{prefix}/{gn}/scale": (channels,), f"{prefix}/{gn}/bias": (channels,)}
            if unit == 1:
                shapes |= {f"{prefix}/conv_proj/kernel": (1, 1, cin, 4 * mid),
                           f"{prefix}/gn_proj/scale": (4 * mid,), f"{prefix}/gn_proj/bias": (4 * mid,)}
            cin = 4 * mid
    for layer in range(layers):
        prefix = f"Transformer/encoderblock_{layer}"
        attention = f"{prefix}/MultiHeadDotProductAttention_1"
        for name in ("query", "key", "value"):
            shapes |= {f"{attention}/{name}/kernel": (hidden, heads, hidden // heads),
                       f"{attention}/{name}/bias": (heads, hidden // heads)}
        shapes |= {
            f"{attention}/out/kernel": (heads, hidden // heads, hidden), f"{attention}/out/bias": (hidden,),
            f"{prefix}/MlpBlock_3/Dense_0/kernel": (hidden, mlp), f"{prefix}/MlpBlock_3/Dense_0/bias": (mlp,),
            f"{prefix}/MlpBlock_3/Dense_1/kernel": (mlp, hidden), f"{prefix}/MlpBlock_3/Dense_1/bias": (hidden,),
        }
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            shapes |= {f"{prefix}/{norm}/scale": (hidden,), f"{prefix}/{norm}/bias": (hidden,)}
    return shapes


def small_checkpoint(layers: int = 6, grid: int = 14, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = checkpoint_shapes(SMALL.resnet_width, SMALL.resnet_layers, SMALL.hidden_size,
                               SMALL.num_heads, SMALL.mlp_dim, layers, grid)
    return {key: rng.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}


def write_npz(path, arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    arrays = small_checkpoint()
    path = write_npz(tmp_path_factory.mktemp("ckpt") / "R50+ViT-B_16.npz", arrays)
    model = GenePredictor(SMALL, 4, 3)
    unused = load_transunet_weights(model, path)
    return arrays, model, unused


def test_the_spec_matches_the_published_file_shapes():
    shapes = checkpoint_shapes(64, (3, 4, 9), 768, 12, 3072, 12, 14)
    assert len([k for k in shapes if k.startswith("Transformer/encoderblock_")]) == 12 * 16
    assert shapes["conv_root/kernel"] == (7, 7, 3, 64)
    assert shapes["block3/unit9/conv3/kernel"] == (1, 1, 256, 1024)
    assert shapes["embedding/kernel"] == (1, 1, 1024, 768)
    assert shapes["Transformer/posembed_input/pos_embedding"] == (1, 197, 768)
    assert shapes["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"] == (12, 64, 768)


def test_paper_model_takes_every_paper_key_it_needs():
    with torch.device("meta"):
        encoder = GenePredictor(ModelConfig.preset("paper"), 4, 1).encoder
    from RadioGenomicsLib.pretrained import _entries
    needed = {key for keys, _, _ in _entries(encoder) for key in keys}
    shapes = checkpoint_shapes(64, (3, 4, 9), 768, 12, 3072, 12, 14)
    assert needed <= set(shapes)
    assert not any(k.startswith("Transformer/encoderblock_8/") for k in needed)


def test_values_land_after_transposition(imported):
    arrays, model, _ = imported
    state = model.encoder.state_dict()
    hidden = SMALL.hidden_size

    def same(name, expected):
        assert torch.allclose(state[name], torch.as_tensor(np.ascontiguousarray(expected)), atol=1e-6), name

    root = arrays["conv_root/kernel"].transpose(3, 2, 0, 1)
    same("cnn.conv1.weight", np.repeat(root.mean(axis=1, keepdims=True), 4, axis=1))
    same("cnn.layer2.0.conv2.weight", arrays["block2/unit1/conv2/kernel"].transpose(3, 2, 0, 1))
    same("cnn.layer2.0.downsample.0.weight", arrays["block2/unit1/conv_proj/kernel"].transpose(3, 2, 0, 1))
    same("cnn.layer3.1.bn3.weight", arrays["block3/unit2/gn3/scale"])
    same("embedding.patch_embeddings.weight", arrays["embedding/kernel"].transpose(3, 2, 0, 1))
    same("embedding.position_embeddings", arrays["Transformer/posembed_input/pos_embedding"][:, 1:])
    block = "Transformer/encoderblock_3"
    attention = f"{block}/MultiHeadDotProductAttention_1"
    qkv = state["blocks.3.attn.qkv.weight"]
    for i, name in enumerate(("query", "key", "value")):
        assert torch.allclose(qkv[i * hidden:(i + 1) * hidden],
                              torch.from_numpy(arrays[f"{attention}/{name}/kernel"].reshape(hidden, hidden).T))
    same("blocks.3.attn.qkv.bias", np.concatenate([arrays[f"{attention}/{n}/bias"].ravel()
                                                   for n in ("query", "key", "value")]))
    same("blocks.3.attn.out_proj.weight", arrays[f"{attention}/out/kernel"].reshape(hidden, hidden).T)
    same("blocks.3.mlp.linear1.weight", arrays[f"{block}/MlpBlock_3/Dense_0/kernel"].T)
    same("blocks.3.norm2.weight", arrays[f"{block}/LayerNorm_2/scale"])
    same("norm.bias", arrays["Transformer/encoder_norm/bias"])


def test_first_layers_taken_and_the_rest_reported(imported):
    _, _, unused = imported
    assert {"cls", "head/kernel", "head/bias"} <= set(unused)
    assert any(k.startswith("Transformer/encoderblock_4/") for k in unused)
    assert not any(k.startswith("Transformer/encoderblock_3/") for k in unused)


def test_imported_query_projection_matches_the_jax_einsum(imported):
    arrays, model, _ = imported
    kernel = arrays["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
    bias = arrays["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/bias"]
    x = np.random.default_rng(1).standard_normal((5, SMALL.hidden_size)).astype(np.float32)
    jax_heads = np.einsum("nd,dhk->nhk", x, kernel) + bias  # flax DenseGeneral
    ours = model.encoder.blocks[0].attn.qkv(torch.from_numpy(x))[:, :SMALL.hidden_size]
    assert np.allclose(ours.detach().numpy(), jax_heads.reshape(5, -1), atol=1e-4)


def test_position_embeddings_resized_to_the_grid(tmp_path):
    arrays = small_checkpoint(layers=4, grid=7)
    arrays["Transformer/posembed_input/pos_embedding"][:] = 0.5
    model = GenePredictor(SMALL, 3, 1)
    load_transunet_weights(model, write_npz(tmp_path / "w.npz", arrays))
    table = model.encoder.embedding.position_embeddings
    assert table.shape == (1, 196, SMALL.hidden_size)
    assert torch.allclose(table, torch.full_like(table, 0.5))
    # three channels: the root convolution is taken as it is
    assert torch.allclose(model.encoder.cnn.conv1.weight,
                          torch.from_numpy(arrays["conv_root/kernel"].transpose(3, 2, 0, 1).copy()))


def test_missing_key_is_a_clear_error_and_changes_nothing(tmp_path):
    arrays = small_checkpoint(layers=4)
    del arrays["block2/unit1/gn_proj/bias"]
    model = GenePredictor(SMALL, 4, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match="no key 'block2/unit1/gn_proj/bias'") as error:
        load_transunet_weights(model, write_npz(tmp_path / "w.npz", arrays))
    assert "\n" not in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_too_few_layers_is_an_error(tmp_path):
    with pytest.raises(InputError, match="encoderblock_3"):
        load_transunet_weights(GenePredictor(SMALL, 4, 1), write_npz(tmp_path / "w.npz", small_checkpoint(3)))


def test_other_model_size_is_a_shape_error(tmp_path):
    wider = dataclasses.replace(SMALL, hidden_size=96)
    with pytest.raises(InputError, match=r"embedding/kernel: gives shape .*`paper` setting"):
        load_transunet_weights(GenePredictor(wider, 4, 1), write_npz(tmp_path / "w.npz", small_checkpoint(4)))


def test_pickles_and_non_npz_are_refused(tmp_path):
    model = GenePredictor(SMALL, 4, 1)
    pickle = tmp_path / "R50+ViT-B_16.pth"
    torch.save({"w": torch.zeros(1)}, pickle)
    with pytest.raises(InputError, match="PyTorch pickle"):
        load_transunet_weights(model, pickle)
    text = tmp_path / "weights.npz"
    text.write_text("not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_transunet_weights(model, text)
    with pytest.raises(InputError, match="no such checkpoint"):
        load_transunet_weights(model, tmp_path / "absent.npz")
