"""Exported fold models on ONNX Runtime and OpenVINO against torch; the precision check;
prediction without PyTorch imported. `small` model, real CT (pyradiomics' lung1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from RadioGenomicsLib import runtime  # noqa: E402
from RadioGenomicsLib.bundle import load_bundle, make_untrained_bundle, sha256_of  # noqa: E402
from RadioGenomicsLib.errors import InputError  # noqa: E402
from RadioGenomicsLib.imaging import load_study  # noqa: E402
from RadioGenomicsLib.model import ModelConfig, top_k_mean  # noqa: E402
from RadioGenomicsLib.preprocess import PreprocessSettings, geometry_names, preprocess  # noqa: E402
from RadioGenomicsLib.runtime import precision as check  # noqa: E402
from RadioGenomicsLib.runtime import runners  # noqa: E402
from RadioGenomicsLib.runtime.head import numpy_top_values, top_k_means  # noqa: E402
from Testing.conftest import lung_cohort, lung_files  # noqa: E402

GENES = 300
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Compiled models and precision verdicts in a folder of the test's own."""
    monkeypatch.setenv("RADIOGENOMICS_CACHE", str(tmp_path / "cache"))


def _genes() -> pd.DataFrame:
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(GENES)],
                          "gene_name": [f"GENE{i}" for i in range(GENES)]})
    genes.loc[:1, "gene_name"] = ["EGFR", "TP53"]
    genes["train_mean"] = np.linspace(0.5, 2.5, GENES)
    genes["train_std"] = 0.4
    return genes


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A one-fold `small` CT bundle exported by `radiogenomics export`, and its output."""
    from RadioGenomicsLib.cli import main

    path = tmp_path_factory.mktemp("bundle") / "ct_small"
    make_untrained_bundle(path, ModelConfig.preset("small"), ["ct"], _genes(),
                          PreprocessSettings(max_slices=4).to_dict(), seed=5, folds=1)
    weights_before = json.loads((path / "metadata.json").read_text())["weights"]
    assert main(["export", str(path)]) == 0
    return load_bundle(path), weights_before


@pytest.fixture(scope="module")
def images(lung_study):
    return preprocess(lung_study, PreprocessSettings(max_slices=4)).images


@pytest.fixture(scope="module")
def torch_reference(exported, images):
    """Fold 0 in torch: tokens (S, T, hidden) and gene values."""
    model = exported[0].model(0)
    x, mask = torch.from_numpy(images)[None], torch.ones(1, len(images), dtype=torch.bool)
    with torch.no_grad():
        tokens = model.encode(x, mask)
        return tokens.numpy()[0], model.predict_genes(tokens, mask).numpy()[0]


def test_export_writes_checksummed_onnx_files(exported):
    bundle, weights_before = exported
    assert set(bundle.files) == {"fold_0.onnx"}
    assert bundle.files["fold_0.onnx"] == sha256_of(bundle.path / "fold_0.onnx")
    assert bundle.checksums == weights_before  # the weight files' entries unchanged
    assert runtime.has_exports(bundle)


def test_a_changed_onnx_file_is_refused(exported, tmp_path, run_cli, lung):
    copy = tmp_path / "changed"
    shutil.copytree(exported[0].path, copy)
    with open(copy / "fold_0.onnx", "r+b") as file:  # one byte of a weight
        file.seek(-100, os.SEEK_END)
        byte = file.read(1)
        file.seek(-100, os.SEEK_END)
        file.write(bytes([byte[0] ^ 1]))
    bundle = load_bundle(copy)  # the safetensors files are intact
    with pytest.raises(InputError, match="fold_0.onnx: checksum mismatch"):
        next(runtime.fold_runners(bundle, "onnxruntime"))
    image, label = lung
    code, _, err = run_cli("predict", "--model", copy, "--image", f"ct={image}",
                           "--segmentation", label, "--out", tmp_path / "genes.csv",
                           "--runtime", "onnxruntime")
    assert code == 2 and "checksum mismatch" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_exported_tokens_and_genes_equal_torch(exported, images, torch_reference, name):
    tokens, values = torch_reference
    runner = next(runtime.fold_runners(exported[0], name, "float32"))
    ours, our_values = runner.run(images)
    assert ours.shape == tokens.shape and ours.dtype == np.float32
    assert np.linalg.norm(ours - tokens) / np.linalg.norm(tokens) < 1e-4
    np.testing.assert_allclose(our_values, values, rtol=1e-4, atol=1e-4)


def test_numpy_top_k_matches_torch_when_k_exceeds_the_tokens():
    rng = np.random.default_rng(0)
    weight, tokens = rng.standard_normal((20, 8), dtype=np.float32), rng.standard_normal((30, 8), dtype=np.float32)
    ks = (1, 5, 30, 100)  # 100 > 30 tokens: capped
    products = torch.from_numpy(weight @ tokens.T)[None]
    expected = top_k_mean(products, torch.tensor([30]), ks).numpy()[0]
    ours = top_k_means(numpy_top_values(weight, tokens, 30), ks)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not runtime.cpu_has_bf16(), reason="this CPU has no AVX-512 BF16 or AMX: "
                                                       "bf16 would be emulated, not checked")
def test_bf16_keeps_the_top_50_genes(exported, images, torch_reference):
    _, values = torch_reference
    runner = next(runtime.fold_runners(exported[0], "openvino", "bf16"))
    reduced = runner.run(images)[1]
    assert np.corrcoef(reduced, values)[0, 1] >= 0.999
    assert check.precision_problem(values, reduced, exported[0].genes) is None
    assert runtime.pick_precision(exported[0], "openvino", "auto", "all", images) == "bf16"


def test_precision_check_refuses_a_broken_model(exported, images, monkeypatch):
    """bf16 whose encoder is broken (tokens off by noise): refused with one line, and
    `auto` falls back to float32; the verdict is kept, not recomputed."""
    original = runners.openvino_encoder

    def broken(path, precision, cache_dir):
        encoder = original(path, precision, cache_dir)
        if precision == "float32":
            return encoder
        noise = np.random.default_rng(1)
        return lambda slices: encoder(slices) + noise.standard_normal((1, 196, 192)).astype(np.float32)

    monkeypatch.setattr(runners, "openvino_encoder", broken)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    with pytest.raises(InputError, match="--precision bf16 refused: reference study 1: ") as error:
        runtime.pick_precision(exported[0], "openvino", "bf16", "all", images)
    assert "\n" not in str(error.value)
    monkeypatch.setattr(check, "ensemble_values", lambda *a: pytest.fail("verdict not reused"))
    assert runtime.pick_precision(exported[0], "openvino", "auto", "all", images) == "float32"


def test_precision_problem_names_the_failure():
    genes = pd.DataFrame({"train_mean": np.zeros(100), "train_std": np.ones(100)})
    full = np.linspace(0, 1, 100)[None]
    assert check.precision_problem(full, full + 1e-6, genes) is None
    swapped = full.copy()
    swapped[0, [49, 50]] = swapped[0, [50, 49]]  # the 50th and 51st trade places, r ~ 1
    assert "1 of the top-50 genes differ" in check.precision_problem(full, swapped, genes)
    noisy = full + np.random.default_rng(0).normal(0, 0.05, full.shape)
    assert "r = 0.9" in check.precision_problem(full, noisy, genes)


def test_runtime_without_exports_is_refused(tmp_path):
    bundle = make_untrained_bundle(tmp_path / "b", ModelConfig.preset("small"), ["ct"],
                                   _genes().head(5), {}, folds=1)
    with pytest.raises(InputError, match="no exported fold models .*radiogenomics export"):
        runtime.pick_runtime(bundle, "onnxruntime", "cpu")
    assert runtime.pick_runtime(bundle, "auto", "cpu") == "torch"


def _with_geometry_and_attention(path: Path) -> None:
    """Rewrite an untrained bundle's folds with a geometry layer, geometry scale and a
    peaked attention that matter (untrained ones are zero, 0 and 1, and near uniform)."""
    from RadioGenomicsLib.bundle import write_bundle

    bundle = load_bundle(path)
    generator = torch.Generator().manual_seed(3)
    states = []
    for fold in bundle.fold_indices():
        state = bundle.state_dict(fold)
        state["head.geometry.weight"] = torch.randn(state["head.geometry.weight"].shape,
                                                   generator=generator) * 0.5
        state["geometry_mean"] = torch.tensor([0.0, 5.0, 2.0, 2.0])
        state["geometry_std"] = torch.tensor([0.5, 1.0, 1.5, 1.0])
        if "attention.score.weight" in state:
            state["attention.score.weight"] = state["attention.score.weight"] * 30
        states.append(state)
    write_bundle(path, states, bundle.metadata, bundle.genes)


def _pooled_bundle(folder: Path, pooling: str, folds: int, settings: PreprocessSettings):
    from RadioGenomicsLib.cli import main

    config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(), "pooling": pooling,
                                    "geometry": True})
    path = folder / f"ct_{pooling}"
    make_untrained_bundle(path, config, ["ct"], _genes(), settings.to_dict(), seed=7, folds=folds)
    _with_geometry_and_attention(path)
    assert main(["export", str(path)]) == 0
    return load_bundle(path), None


@pytest.fixture(scope="module")
def attention_geometry(tmp_path_factory):
    """Gated-attention pooling and geometry, reading the tumour mask as a second input
    channel, exported (mean pooling and geometry: the `frozen-ridge` test below)."""
    import onnxruntime

    settings = PreprocessSettings(max_slices=4, tumour_channel=True)
    bundle = _pooled_bundle(tmp_path_factory.mktemp("attention"), "attention", 1, settings)
    session = onnxruntime.InferenceSession(str(bundle[0].path / "fold_0.onnx"))
    assert session.get_inputs()[0].shape[1] == 2  # the CT and the tumour mask
    return bundle


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_numpy_heads_equal_the_models(pooling, tmp_path):
    """Mean and gated-attention pooling with geometry in numpy, from the safetensors
    weights, against `GenePredictor.predict_genes` on the same tokens."""
    from safetensors.torch import save_file

    from RadioGenomicsLib.model import GenePredictor
    from RadioGenomicsLib.runtime.head import read_head

    config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(), "pooling": pooling,
                                    "geometry": True})
    torch.manual_seed(0)
    model = GenePredictor(config, 1, 50).eval()
    with torch.no_grad():
        model.head.geometry.weight.normal_()
        model.geometry_mean.copy_(torch.tensor([0.1, 5.0, 2.0, 2.0]))
        model.geometry_std.copy_(torch.tensor([0.5, 1.0, 1.5, 1.0]))
        if model.attention is not None:
            model.attention.score.weight.mul_(30)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "f.safetensors"))
    tokens = torch.randn(1, 3, config.grid_size ** 2, config.hidden_size, generator=torch.Generator().manual_seed(1))
    geometry = np.array([0.3, 6.0, 1.0, 3.0], dtype=np.float32)
    mask = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        expected = model.predict_genes(tokens, mask, torch.from_numpy(geometry)[None]).numpy()[0]
        pooled_only = model.predict_genes(tokens, mask, torch.zeros(1, 4)).numpy()[0]
    head, shift = read_head(tmp_path / "f.safetensors", config)
    values = head.gene_values(tokens.numpy()[0]) + shift(geometry)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(shift(geometry)).max() > 0.5  # the geometry counts
    mean_values = head.weight @ tokens.numpy()[0].reshape(-1, config.hidden_size).mean(0) + head.bias
    if pooling == "attention":  # the attention is not a plain mean
        weights = head.attention.weights(tokens.numpy()[0].reshape(-1, config.hidden_size))
        assert weights.max() > 10 / len(weights)
        assert np.abs(pooled_only - shift(np.zeros(4)) - mean_values).max() > 1e-2
    with pytest.raises(ValueError, match="needs 4 geometry values"):
        shift(None)


@pytest.mark.parametrize("stem_texture, core_texture", [(False, False), (True, False),
                                                        (True, True)])
def test_numpy_tumour_pooling_equals_the_models(tmp_path, stem_texture, core_texture):
    """Tumour pooling without torch: the token shares from the slices' mask channel (kept
    with the weights) and the share-weighted mean, as GenePredictor computes them; with
    stem texture also the SD of its stem means across the tumour [and its core], and the
    map's tokens."""
    from safetensors.torch import save_file

    from RadioGenomicsLib.model import GenePredictor
    from RadioGenomicsLib.runtime.head import map_tokens, read_head, token_shares

    config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(),
                                    "pooling": "tumour", "stem_texture": stem_texture,
                                    "core_texture": core_texture})
    torch.manual_seed(0)
    model = GenePredictor(config, 2, 50, tumour_channel=1).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "f.safetensors"))
    images = np.zeros((3, 2, 224, 224), np.float32)
    images[:, 0] = np.random.default_rng(0).normal(size=(3, 224, 224))
    images[:, 1, 40:100, 60:130] = 1  # partly covered patches at every edge
    tokens = torch.randn(1, 3, config.grid_size ** 2, config.token_size,
                         generator=torch.Generator().manual_seed(1))
    if stem_texture:  # the stem's means and their squares, as the encoder gives them
        start = config.hidden_size + config.stem_channels
        tokens[..., start:] = tokens[..., config.hidden_size:start] ** 2
    mask = torch.ones(1, 3, dtype=torch.bool)
    shares = model.token_shares(torch.from_numpy(images)[None])
    np.testing.assert_allclose(token_shares(images[:, 1], config.grid_size),
                               shares[0].numpy(), atol=1e-6)
    with torch.no_grad():
        expected = model.predict_genes(tokens, mask, token_shares=shares).numpy()[0]
    head, _ = read_head(tmp_path / "f.safetensors", config)
    assert head.tumour_channel == 1
    np.testing.assert_allclose(head.gene_values(tokens.numpy()[0], images), expected,
                               rtol=1e-5, atol=1e-5)
    hidden = config.hidden_size
    whole_crop = (head.weight[:, :hidden]
                  @ tokens.numpy()[0, ..., :hidden].reshape(-1, hidden).mean(0))
    assert np.abs(whole_crop + head.bias - expected).max() > 1e-3
    with pytest.raises(ValueError, match="tumour mask channel"):
        head.gene_values(tokens.numpy()[0])
    # the map's tokens: the patient's texture SD on every token (or the tokens as they are)
    filled = map_tokens(tokens.numpy()[0], config, head.embedding(tokens.numpy()[0], images))
    with torch.no_grad():
        maps = model.gene_maps(tokens, list(range(50)), shares)[0]  # (S, genes, grid, grid)
    np.testing.assert_allclose(filled @ head.weight.T + head.bias,
                               maps.flatten(2).transpose(1, 2).numpy(), rtol=1e-4, atol=1e-4)
    assert np.array_equal(filled, tokens.numpy()[0]) != stem_texture


def _top(table: pd.DataFrame, n: int = 20) -> list[str]:
    return list(table["gene_id"][:n])


@pytest.mark.parametrize("bundle_name", ["exported", "attention_geometry"])
def test_predict_without_torch(bundle_name, request, lung, tmp_path, run_cli):
    """`predict --runtime onnxruntime` (table, run, a map) in a fresh process imports
    neither torch nor MONAI; its table (values and ranking) and map equal the torch
    runtime's, and OpenVINO's table too: top-k, and attention pooling with geometry."""
    bundle = request.getfixturevalue(bundle_name)[0]
    image, label = lung
    probe = ("import sys; from RadioGenomicsLib.cli import main; code = main(sys.argv[1:]); "
             "print('IMPORTED', [m for m in ('torch', 'monai') if m in sys.modules]); sys.exit(code)")
    args = ["predict", "--model", str(bundle.path), "--image", f"ct={image}",
            "--segmentation", str(label), "--map-gene", "EGFR"]
    light, heavy, vino = tmp_path / "light", tmp_path / "torch", tmp_path / "openvino"
    result = subprocess.run([sys.executable, "-c", probe, *args, "--out", str(light / "genes.csv"),
                             "--maps", str(light), "--runtime", "onnxruntime"], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "IMPORTED []" in result.stdout and "(onnxruntime, float32)" in result.stdout
    settings = json.loads((light / "genes.run" / "run.json").read_text())["settings"]
    assert (settings["runtime"], settings["precision"], settings["device"]) == ("onnxruntime", "float32", "cpu")
    code, _, _ = run_cli(*args, "--out", heavy / "genes.csv", "--maps", heavy, "--runtime", "torch")
    assert code == 0
    code, _, _ = run_cli(*args[:-2], "--out", vino / "genes.csv", "--runtime", "openvino",
                         "--precision", "float32")
    assert code == 0
    theirs = pd.read_csv(heavy / "genes.csv")
    spread = np.ptp(theirs["predicted"])
    for folder in (light, vino):
        ours = pd.read_csv(folder / "genes.csv")
        assert _top(ours) == _top(theirs)
        ours = ours.set_index("gene_id")
        np.testing.assert_allclose(ours.loc[theirs["gene_id"], "predicted"], theirs["predicted"],
                                   rtol=1e-4, atol=1e-4 * spread)
    maps = [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "EGFR.nrrd"))) for folder in (light, heavy)]
    np.testing.assert_allclose(maps[0], maps[1], atol=2e-3)  # from float16 tokens


def test_cohort_keeps_the_precision_settled_by_its_first_study(exported, testdata, tmp_path, run_cli):
    """A cohort on OpenVINO: the first patient that predicts settles the precision (bf16
    where the CPU has it and the check passes), the others run on the same kept models
    and get what one study alone gets."""
    # the first fails, the second settles
    lung_cohort(testdata, tmp_path / "cohort.csv", ["9", "", ""])
    code, stdout, _ = run_cli("predict", "--model", exported[0].path, "--manifest",
                              tmp_path / "cohort.csv", "--out", tmp_path / "out", "--runs",
                              tmp_path / "runs", "--runtime", "openvino")
    assert code == 0 and "2 of 3 patients predicted" in stdout
    settings = [json.loads((tmp_path / "runs" / p / "run.json").read_text())["settings"]
                for p in ("TCGA-AA-0002", "TCGA-AA-0003")]
    expected = "bf16" if runtime.cpu_has_bf16() else "float32"
    assert [(s["runtime"], s["precision"]) for s in settings] == [("openvino", expected)] * 2
    image, label = lung_files(testdata)
    images = preprocess(load_study({"ct": image}, label), PreprocessSettings(max_slices=4)).images
    alone = next(runtime.fold_runners(exported[0], "openvino", expected)).run(images)[1]
    matrix = pd.read_csv(tmp_path / "out" / "predictions.tsv", sep="\t", index_col=0)
    np.testing.assert_allclose(matrix.loc["TCGA-AA-0003"], alone, rtol=1e-5, atol=1e-6)


def test_every_head_runs_light(tmp_path):
    """Mean and attention pooling, with geometry, pick a light runtime under `auto`."""
    for pooling in ("mean", "attention"):
        config = ModelConfig.from_dict({**ModelConfig.preset("small").to_dict(),
                                        "pooling": pooling, "geometry": True})
        bundle = make_untrained_bundle(tmp_path / pooling, config, ["ct"], _genes().head(5), {},
                                       folds=1)
        assert runtime.light_problem(bundle) is None
        (bundle.path / "fold_0.onnx").write_bytes(b"stand-in")  # registered, not run
        from RadioGenomicsLib.bundle import register_files
        register_files(bundle.path, ["fold_0.onnx"])
        assert runtime.pick_runtime(load_bundle(bundle.path), "auto", "cpu") in runtime.LIGHT_RUNTIMES


@pytest.mark.parametrize("preset, modality, channels", [
    ("frozen-ridge", "mri", ("t1", "t1gd", "t2", "flair")),  # mean pooling, geometry
    ("frozen-ridge-ct", "ct", ("ct",)),  # tumour pooling, a CT window, the mask channel
])
def test_the_frozen_ridge_presets_train_export_and_predict_light(tmp_path, run_cli, preset,
                                                                 modality, channels):
    """`train --config PRESET --export` on a few synthetic patients, two folds; the
    onnxruntime prediction of a patient equals torch's (table and a gene's map)."""
    cohort = tmp_path / "cohort"
    assert run_cli("synth", "--out", cohort, "--patients", "6", "--genes", "20", "--seed", "5",
                   "--jobs", "1", "--modality", modality)[0] == 0
    bundle = tmp_path / "bundle"
    code, out, _ = run_cli("train", "--manifest", cohort / "manifest.csv", "--expression",
                           cohort / "expression", "--sample-sheet", cohort / "gdc_sample_sheet.tsv",
                           "--out", bundle, "--config", preset, "--folds", "2",
                           "--cache", tmp_path / "cache", "--device", "cpu", "--export")
    assert code == 0 and "fold models exported as ONNX" in out
    assert runtime.has_exports(load_bundle(bundle)) and load_bundle(bundle).config.geometry
    # the CT preset's geometry: the tumour's 3-D shape, its HU and its shell's after the 4
    names = geometry_names(load_bundle(bundle).metadata.preprocessing)
    assert names[4:] == (["roundness", "log_elongation", "log_flatness", "log1p_surface_mm2",
                          "intensity_mean", "intensity_sd", "intensity_p10", "intensity_p25",
                          "intensity_p50", "intensity_p75", "intensity_p90", "shell_mean",
                          "shell_sd", "shell_p10", "shell_p50", "shell_p90"]
                         if preset == "frozen-ridge-ct" else [])
    # the folds share the frozen encoder, and so its export
    assert (bundle / "fold_0.onnx").read_bytes() == (bundle / "fold_1.onnx").read_bytes()
    study = pd.read_csv(cohort / "manifest.csv").iloc[0]
    args = ["predict", "--model", bundle, "--segmentation", cohort / study["segmentation"],
            "--map-gene", "EGFR"]
    for channel in channels:
        args += ["--image", f"{channel}={cohort / study[channel]}"]
    tables, maps = [], []
    for name in ("torch", "onnxruntime"):
        assert run_cli(*args, "--out", tmp_path / name / "genes.csv", "--maps", tmp_path / name,
                       "--runtime", name)[0] == 0
        tables.append(pd.read_csv(tmp_path / name / "genes.csv"))
        maps.append(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name / "EGFR.nrrd"))))
    assert list(tables[0]["gene_id"]) == list(tables[1]["gene_id"])
    np.testing.assert_allclose(tables[1]["predicted"], tables[0]["predicted"], rtol=0,
                               atol=1e-4 * np.ptp(tables[0]["predicted"]))
    np.testing.assert_allclose(maps[1], maps[0], atol=2e-3, equal_nan=True)


def test_torch_bf16_on_the_cpu_is_checked_and_close(exported, images, torch_reference, monkeypatch):
    """torch at bf16 (transformer autocast, bf16 head products): checked like OpenVINO's
    before use, values at r >= 0.999 with float32; `auto` keeps torch at float32."""
    from RadioGenomicsLib.run import torch_runners

    _, values = torch_reference
    runner = next(torch_runners(exported[0], "cpu", "all", "bf16"))
    reduced = runner.gene_values(runner.encode(images), images)
    assert not np.array_equal(reduced, values)
    assert np.corrcoef(reduced, values)[0, 1] >= 0.999
    assert runtime.pick_precision(exported[0], "torch", "auto", "all", images) == "float32"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    verdict = check.precision_verdict(exported[0], "torch", "bf16", "all", images)
    assert verdict == check.precision_problem(values, reduced, exported[0].genes)
