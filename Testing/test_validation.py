"""Settings and metadata validated against their schemas: one line naming file, key, problem."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from RadioGenomicsLib.bundle import METADATA_FILE, load_bundle, make_untrained_bundle
from RadioGenomicsLib.cohort import CohortError, validate_cohort
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.expression import genes_path, read_matrix
from RadioGenomicsLib.model import ModelConfig
from RadioGenomicsLib.preprocess import PreprocessSettings
from RadioGenomicsLib.training.recipe import load_recipe

TINY = ModelConfig(name="tiny", resnet_width=8, resnet_layers=(1, 1, 1), norm_groups=8,
                   hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, top_k=(1, 2))


@pytest.fixture
def bundle(tmp_path):
    genes = pd.DataFrame({"gene_id": ["G1", "G2"], "gene_name": ["EGFR", "MGMT"]})
    return make_untrained_bundle(tmp_path / "b", TINY, ["ct"], genes,
                                 PreprocessSettings().to_dict()).path


def one_line(error: InputError, *words: str) -> None:
    text = str(error)
    assert "\n" not in text, text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("change, key, problem", [
    (lambda m: m["model"].update(hidden_size="768"), "model.hidden_size", "is not of type 'integer'"),
    (lambda m: m.update(folds=1e9), "folds", "1000000000.0 is not"),
    (lambda m: m["preprocessing"].update(size=10**6), "preprocessing.size", "greater than the maximum"),
    (lambda m: m["preprocessing"].update(max_slices="all"), "preprocessing.max_slices", "not of type"),
    (lambda m: m.update(channels=["ct", "ct"]), "channels", "non-unique"),
    (lambda m: m["weights"].update({"fold_0.safetensors": "abc"}), "weights.fold_0.safetensors",
     "'abc' does not match"),
    (lambda m: m.update(markers="EGFR"), "markers", "is not of type 'array'"),
])
def test_damaged_metadata_is_one_line(bundle, change, key, problem, run_cli):
    path = bundle / METADATA_FILE
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    with pytest.raises(InputError) as error:
        load_bundle(bundle, verify_checksums=False)
    one_line(error.value, str(path), f"{key}: ", problem)
    code, _, err = run_cli("info", bundle)
    assert code == 2 and len(err.strip().splitlines()) == 1 and key in err


@pytest.mark.parametrize("document, words", [
    ({"training": {"folds": 1e9}}, ("training.folds", "not of type 'integer'")),
    ({"training": {"folds": 10**9}}, ("training.folds", "greater than the maximum of 100")),
    ({"training": {"epochs": "ten"}}, ("training.epochs", "'ten' is not of type 'integer'")),
    ({"preprocessing": {"size": 50000}}, ("preprocessing.size", "maximum of 1024")),
    ({"model": {"top_k": ["1"]}}, ("model.top_k.0", "not of type 'integer'")),
    ({"markers": "EGFR"}, ("markers", "is not of type 'array'")),
    ({"target": []}, ("target", "is not of type 'object'")),
    ({"base": []}, ("unknown base []",)),  # found by the fuzz suite: was a TypeError
])
def test_bad_recipe_values_are_one_line(tmp_path, document, words):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError) as error:
        load_recipe(path)
    one_line(error.value, str(path), *words)


def test_command_line_overrides_are_validated_too(run_cli, tmp_path):
    code, _, err = run_cli("train", "--manifest", tmp_path / "m.csv", "--expression",
                           tmp_path / "e.tsv", "--out", tmp_path / "b", "--config", "small",
                           "--folds", "1000000000")
    assert code == 2 and "training.folds: 1000000000 is greater than the maximum of 100" in err


def test_model_settings_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"dropout": 1.5}))
    with pytest.raises(InputError) as error:
        ModelConfig.load(path)
    one_line(error.value, str(path), "dropout: 1.5 is greater than or equal to the maximum of 1")


def test_a_huge_manifest_label_is_a_listed_problem(tmp_path):
    (tmp_path / "ct.nii.gz").write_bytes(b"x")
    (tmp_path / "seg.nii.gz").write_bytes(b"x")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("patient_id,ct,segmentation,label\n"
                        f"P1,ct.nii.gz,seg.nii.gz,{'9' * 40}\nP2,ct.nii.gz,seg.nii.gz,2\n")
    with pytest.raises(CohortError) as error:
        validate_cohort(manifest)
    one_line(error.value, "bad label: P1", "is larger than 2147483647")


@pytest.mark.parametrize("sidecar, problem", [
    (b"\xff\xfe\x00\x81 not text", "cannot read the gene symbols table"),
    (b'gene_id\tgene_name\tgene_type\n"G1\tA\tprotein_coding\n', "cannot read the gene symbols table"),
    (b"gene_id\tgene_name\tgene_type\nG1\tA\tx\nG1\tB\tx\n", "gene G1 is listed twice"),
])
def test_a_damaged_symbols_sidecar_is_one_line(tmp_path, sidecar, problem):
    matrix = tmp_path / "m.tsv"
    matrix.write_text("patient_id\tG1\nP1\t1.5\n")
    genes_path(matrix).write_bytes(sidecar)
    with pytest.raises(InputError) as error:
        read_matrix(matrix)
    one_line(error.value, str(genes_path(matrix)), problem)


def test_every_setting_has_a_schema_entry():
    """A new setting without a schema entry would be refused as unknown: caught here."""
    import dataclasses

    from RadioGenomicsLib import schemas
    from RadioGenomicsLib.training.recipe import Recipe, TrainSettings

    for cls, schema in ((ModelConfig, schemas.MODEL), (PreprocessSettings, schemas.PREPROCESSING),
                        (TrainSettings, schemas.TRAINING)):
        assert {f.name for f in dataclasses.fields(cls)} == set(schema["properties"]), cls
    assert set(Recipe.__dataclass_fields__) - {"value", "transform"} <= \
        set(schemas.RECIPE["properties"])
    from RadioGenomicsLib.model.config import POOLINGS
    from RadioGenomicsLib.preprocess import REGIONS, SLICE_CHOICES
    from RadioGenomicsLib.training.recipe import (ENCODER_MODES, GROUPINGS, HEAD_SOLVERS,
                                                  TARGET_UNITS, TRANSFORM_NAMES)

    target = schemas.RECIPE["properties"]["target"]["properties"]
    for enum, names in ((schemas.MODEL["properties"]["pooling"], POOLINGS),
                        (schemas.PREPROCESSING["properties"]["region"], REGIONS),
                        (schemas.PREPROCESSING["properties"]["slice_choice"], SLICE_CHOICES),
                        (schemas.TRAINING["properties"]["encoder"], ENCODER_MODES),
                        (schemas.TRAINING["properties"]["group_by"], GROUPINGS),
                        (schemas.TRAINING["properties"]["head_solver"], HEAD_SOLVERS),
                        (target["value"], tuple(TARGET_UNITS)),
                        (target["transform"], tuple(TRANSFORM_NAMES))):
        assert tuple(enum["enum"]) == tuple(names)
