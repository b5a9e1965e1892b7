"""Training recipes: the presets, the per-cohort files in training/, and their errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.genetable import MARKER_GENES
from RadioGenomicsLib.training.recipe import PRESETS, load_recipe

RECIPES = sorted((Path(__file__).parent.parent / "training").glob("*.json"))


def test_the_four_cohorts_of_the_paper_have_recipes():
    assert [r.stem for r in RECIPES] == ["tcga-brca", "tcga-gbm", "tcga-lgg", "tcga-luad"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_with_the_paper_model(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.model == PRESETS["paper"].model  # 8 layers of 768, 12 heads
    assert recipe.model.num_layers == 8 and recipe.training.folds == 5
    assert (recipe.value, recipe.transform) == ("fpkm_uq", "log10p1")
    assert set(MARKER_GENES) <= set(recipe.markers)
    expected_region = "brain" if path.stem in ("tcga-gbm", "tcga-lgg") else "body"
    assert recipe.preprocessing.region == expected_region


def test_file_fields_override_the_base_and_fingerprints_differ(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"base": "small", "training": {"epochs": 3}}))
    recipe = load_recipe(path)
    assert recipe.training.epochs == 3
    assert recipe.training.learning_rate == PRESETS["small"].training.learning_rate
    assert recipe.model == PRESETS["small"].model
    assert recipe.fingerprint() != PRESETS["small"].fingerprint()
    assert recipe.with_training(epochs=None).training.epochs == 3  # None: not given


@pytest.mark.parametrize("document, message", [
    ({"training": {"epoch": 3}}, "unknown training setting(s) epoch"),
    ({"trainig": {}}, "unknown recipe section(s) trainig"),
    ({"training": {"folds": 1}}, "training.folds: 1 is less than the minimum of 2"),
    ({"training": {"folds": 1e9}}, "training.folds: 1000000000.0 is not of type 'integer'"),
    ({"training": {"learning_rate": "fast"}}, "training.learning_rate: 'fast' is not of type"),
    ({"preprocessing": {"size": 100000}}, "preprocessing.size: 100000 is greater than the maximum"),
    ({"model": {"hidden_size": "768"}}, "model.hidden_size: '768' is not of type 'integer'"),
    ({"target": {"transform": "log"}}, "target.transform: 'log' is not one of"),
    ({"model": {"num_heads": 5}}, "not a multiple of num_heads"),
    ({"base": "frozen-ridge", "model": {"pooling": "tumour"}},
     'pooling "tumour" needs preprocessing\'s tumour_channel'),
    ({"base": "frozen-ridge", "model": {"pooling": "attention"}},
     "head_solver ridge needs mean or tumour pooling"),
])
def test_bad_recipes(tmp_path, document, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_recipe(path)
    assert str(path) in str(error.value)


def test_unknown_preset():
    with pytest.raises(InputError, match="neither a preset"):
        load_recipe("huge")


BEYOND = {"tcga-gbm": "frozen-ridge-brats", "tcga-lgg": "frozen-ridge-brats",
          "tcga-brca": "frozen-ridge", "tcga-luad": "frozen-ridge-ct"}


@pytest.mark.parametrize("stem", sorted(BEYOND))
def test_each_cohort_has_a_beyond_the_paper_variant(stem):
    """training/beyond/COHORT.json: the cohort's target, markers and normalisation region
    on the CPU preset that fits its images (BraTS labels, a plain tumour mask, CT)."""
    folder = Path(__file__).parent.parent / "training"
    paper, beyond = load_recipe(folder / f"{stem}.json"), load_recipe(folder / "beyond" /
                                                                       f"{stem}.json")
    preset = PRESETS[BEYOND[stem]]
    assert beyond.name == f"{stem}-beyond"
    assert beyond.model == preset.model and beyond.training == preset.training
    assert beyond.preprocessing == dataclasses.replace(
        preset.preprocessing, region=paper.preprocessing.region,
        skull_strip=paper.preprocessing.skull_strip)
    assert (beyond.value, beyond.transform, beyond.markers) == (paper.value, paper.transform,
                                                                paper.markers)
