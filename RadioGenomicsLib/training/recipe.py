"""A training recipe: model, preprocessing, training and target settings in one place.

`--config paper|small|FILE`: the presets, or a JSON file such as the per-cohort recipes
in `training/`:

    {"name": "tcga-gbm", "model": "paper" | {...ModelConfig fields...},
     "preprocessing": {...PreprocessSettings fields...},
     "training": {...TrainSettings fields...},
     "target": {"value": "fpkm_uq", "transform": "log10p1"},
     "markers": ["IDH1", "EGFR", ...]}

Fields a file leaves out take the preset's value (`"base": "paper"` by default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from RadioGenomicsLib.errors import InputError, read_json_object
from RadioGenomicsLib.model import ModelConfig
from RadioGenomicsLib.preprocess import PreprocessSettings, geometry_names, tumour_channel_index
from RadioGenomicsLib.genetable import MARKER_GENES
from RadioGenomicsLib.schemas import RECIPE, TRAINING, validate
from RadioGenomicsLib.training.permutation import MIN_PERMUTATIONS

LINEAR_POOLINGS = ("mean", "tumour")  # a fixed weighting of the tokens: ridge can fit the head
TARGET_UNITS = {"fpkm_uq": "FPKM-UQ", "tpm": "TPM", "counts": "counts"}
TRANSFORM_NAMES = {"log10p1": "log10(1+x)", "log2p1": "log2(1+x)", "none": "x"}
GROUPINGS = ("patient", "site")
ENCODER_MODES = ("train", "frozen")
HEAD_SOLVERS = ("adamw", "ridge")
# which genes' ridge fits read the transformer token's columns beside a stem-texture
# model's texture and geometry: those where leave-one-out prefers them, or none
TOKEN_COLUMNS = ("per_gene", "none")
TEXTURE_COLUMNS = ("always", "per_gene")
# training settings added after recipes and checkpoints were written: left out of `to_dict`
# at their default, so that earlier fingerprints stay the same (as preprocess.LATER_SETTINGS)
LATER_TRAINING = {"token_columns": "per_gene", "texture_columns": "always", "permutations": 0}


@dataclass(frozen=True)
class TrainSettings:
    """Cross-validation and optimisation (the paper's: MSE, AdamW, 5 folds, early stop)."""

    folds: int = 5
    epochs: int = 40
    patience: int = 8  # epochs without a better validation r before stopping
    validation_fraction: float = 0.1  # of each training fold, for early stopping
    batch_patients: int = 4
    train_slices: int = 8  # slices drawn per patient and step (all slices at evaluation)
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    seed: int = 0
    # TransUNet's ImageNet-21k R50+ViT-B_16.npz to start the encoder from ("": random)
    pretrained: str = ""
    # MSE on each gene's z-score over the training patients rather than on its raw value:
    # every gene weighs alike (the evaluation, Pearson r, is blind to scale); the shipped
    # weights are converted back to the target's units either way
    standardize_targets: bool = False
    # HE2RNA draws one k of the top-k list per step; False uses the whole list, as at
    # evaluation (less train-time noise in the output: learns sooner on small cohorts)
    random_top_k: bool = True
    # folds keep every "patient" apart, or every TCGA tissue-source "site" (the barcode's
    # second field) together: no site in both training and evaluation
    group_by: str = "patient"
    # a control: expression rows shuffled across patients before anything else (seeded
    # by `seed`); the image-gene links are gone, so every gene found is a false positive
    permute_targets: bool = False
    # "train": the encoder and head trained together (the paper); "frozen": two stages,
    # every slice encoded once by a frozen encoder (seeded random, or `pretrained`), then
    # the pooling and gene layer trained alone on the cached tokens (training/frozen.py)
    encoder: str = "train"
    head_epochs: int = 300  # "frozen": most epochs of the head
    head_patience: int = 30  # "frozen": epochs without a lower validation loss
    head_learning_rate: float = 1e-3
    refit: bool = True  # "frozen": refit on the whole training fold for the chosen epochs
    # "frozen" with mean or tumour pooling: "adamw" (epochs on the tokens) or "ridge"
    # (closed form on the pooled token and the geometry: RidgeCV, a penalty per gene
    # chosen by leave-one-out on the whole training fold, the radiomics baseline's estimator)
    head_solver: str = "adamw"
    # "frozen": also cross-validate the fusion of the patient embedding (mean token [and
    # geometry]) with the radiomics baseline's features, one ridge per gene fitted inside
    # the same training folds, reported as its own method (<bundle>/fusion-report)
    fusion: bool = False
    # head_solver "ridge" on a stem-texture model: the transformer token's columns in each
    # gene's fit where leave-one-out prefers ("per_gene") or never ("none")
    token_columns: str = "per_gene"
    # the same for the stem texture's columns: in every gene's fit ("always") or where
    # leave-one-out prefers ("per_gene"), beside the geometry alone
    texture_columns: str = "always"
    # the permutation test (training/permutation.py): the cross-validation re-run on this
    # many permutations of the expression rows, for each gene's family-wise p (0: none);
    # closed-form fits only (head_solver ridge, the baseline, the fusion)
    permutations: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The settings, LATER_TRAINING's only when not at their default."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in LATER_TRAINING or v != LATER_TRAINING[k]}

    def problems(self) -> list[str]:
        found = []
        if self.encoder not in ENCODER_MODES:
            found.append(f"encoder {self.encoder!r}: choose {' or '.join(ENCODER_MODES)}")
        if self.head_epochs < 1 or self.head_patience < 1 or self.head_learning_rate <= 0:
            found.append("head_epochs and head_patience must be >= 1, head_learning_rate > 0")
        if self.head_solver not in HEAD_SOLVERS:
            found.append(f"head_solver {self.head_solver!r}: choose {' or '.join(HEAD_SOLVERS)}")
        if self.token_columns not in TOKEN_COLUMNS:
            found.append(f"token_columns {self.token_columns!r}: choose "
                         f"{' or '.join(TOKEN_COLUMNS)}")
        if self.texture_columns not in TEXTURE_COLUMNS:
            found.append(f"texture_columns {self.texture_columns!r}: choose "
                         f"{' or '.join(TEXTURE_COLUMNS)}")
        if self.fusion and self.encoder != "frozen":
            found.append("fusion needs encoder \"frozen\" (a trained encoder saw every fold)")
        if 0 < self.permutations < MIN_PERMUTATIONS:
            found.append(f"permutations {self.permutations}: 0 or at least {MIN_PERMUTATIONS} "
                         "(fewer cannot reach p <= 0.05)")
        if self.group_by not in GROUPINGS:
            found.append(f"group_by {self.group_by!r}: choose {' or '.join(GROUPINGS)}")
        if self.folds < 2:
            found.append(f"folds {self.folds}: need at least 2")
        if self.epochs < 1 or self.patience < 1 or self.batch_patients < 1 or self.train_slices < 1:
            found.append("epochs, patience, batch_patients and train_slices must be >= 1")
        if not 0 < self.validation_fraction < 0.5:
            found.append(f"validation_fraction {self.validation_fraction}: need 0 < f < 0.5")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            found.append("learning_rate must be > 0 and weight_decay >= 0")
        return found


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelConfig
    preprocessing: PreprocessSettings
    training: TrainSettings
    value: str = "fpkm_uq"
    transform: str = "log10p1"
    markers: tuple[str, ...] = MARKER_GENES

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model.to_dict(),
                "preprocessing": self.preprocessing.to_dict(),
                "training": self.training.to_dict(),
                "target": {"value": self.value, "transform": self.transform},
                "markers": list(self.markers)}

    def problems(self) -> list[str]:
        """The training settings' problems and those of how they go with the model's."""
        found = self.training.problems()
        if self.model.pooling == "tumour" and not self.preprocessing.tumour_channel:
            found.append("pooling \"tumour\" needs preprocessing's tumour_channel (the mask "
                         "that weighs each token)")
        if self.training.head_solver == "ridge" and self.model.pooling not in LINEAR_POOLINGS:
            found.append(f"head_solver ridge needs {' or '.join(LINEAR_POOLINGS)} pooling "
                         "(a linear model of the pooled token)")
        if self.training.token_columns == "none" and not (
                self.training.head_solver == "ridge" and self.model.stem_texture):
            found.append("token_columns \"none\" needs head_solver ridge and a stem_texture "
                         "model (whose texture and geometry the gene fits read instead)")
        if self.training.texture_columns == "per_gene" and not (
                self.training.head_solver == "ridge" and self.model.stem_texture
                and self.model.geometry):
            found.append("texture_columns \"per_gene\" needs head_solver ridge and a "
                         "stem_texture model with geometry (the fit without the texture)")
        return found

    def fingerprint(self) -> str:
        """Identifies the settings a checkpoint was made with."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def build_model(self, in_channels: int, genes: int):
        """An untrained GenePredictor of this recipe (geometry values as its preprocessing
        makes them)."""
        from RadioGenomicsLib.model import GenePredictor

        return GenePredictor(self.model, in_channels, genes,
                             len(geometry_names(self.preprocessing)),
                             tumour_channel_index(in_channels, self.preprocessing))

    @property
    def target_units(self) -> str:
        return TARGET_UNITS[self.value]

    @property
    def transform_name(self) -> str:
        return TRANSFORM_NAMES[self.transform]

    def with_training(self, **changes: Any) -> Recipe:
        """The recipe with some training settings replaced (command-line overrides)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        training = dataclasses.replace(self.training, **changes)
        validate(dataclasses.asdict(training), TRAINING, None, prefix="training")
        recipe = dataclasses.replace(self, training=training)
        _check(recipe.problems(), None)
        return recipe


PRESETS: dict[str, Recipe] = {
    "paper": Recipe("paper", ModelConfig.preset("paper"), PreprocessSettings(), TrainSettings()),
    # the same shape, sized to train on a CPU in minutes (tests, the demo); trained without
    # the head's train-time noise (random k, head dropout) and on z-scored genes, which
    # learned the synthetic links twice as fast (BENCHMARKS.md, "The model beside the
    # baseline")
    "small": Recipe("small", ModelConfig.preset("small"), PreprocessSettings(max_slices=16),
                    TrainSettings(epochs=12, patience=4, batch_patients=4, train_slices=4,
                                  learning_rate=5e-4, standardize_targets=True,
                                  random_top_k=False)),
    # beyond the paper, for a CPU and a small cohort: the small encoder frozen (every slice
    # encoded once), slices spread across the lesion, the mean token and the mask's
    # geometry into a ridge per gene (closed form, no epochs). Chosen on the seed-0
    # synthetic cohort only (BENCHMARKS.md): 3 of 50 linked genes at 40 patients, where
    # `small` found none and a frozen attention head trained by AdamW found 1
    "frozen-ridge": Recipe(
        "frozen-ridge", dataclasses.replace(ModelConfig.preset("small"), pooling="mean",
                                            geometry=True),
        PreprocessSettings(max_slices=16, slice_choice="spread"),
        TrainSettings(encoder="frozen", head_solver="ridge")),
    # the same reading the tumour mask and BraTS' sub-regions (1 necrosis / non-enhancing
    # core, 2 oedema, 4 enhancing) as input channels, for segmentations labelled that way.
    # Seed-0 tuning (40 patients): 9 of 50 linked genes, 0 null, where frozen-ridge found 3
    # and the tumour mask alone 2 (BENCHMARKS.md). With each sub-region's volume and share
    # in the geometry (region_geometry; the necrosis factor is the necrotic core's share,
    # which the mean token hardly keeps): seed 0, 200 patients x 2,000 genes, 159 of 200
    # linked genes where it found 148, necrosis 25 where 15 (the baseline 144, necrosis 32),
    # 0 null either way; at 40 patients 8 where 9, necrosis 0 either way
    "frozen-ridge-brats": Recipe(
        "frozen-ridge-brats", dataclasses.replace(ModelConfig.preset("small"), pooling="mean",
                                                  geometry=True),
        PreprocessSettings(max_slices=16, slice_choice="spread", tumour_channel=True,
                           region_labels=(1, 2, 4), region_geometry=True),
        TrainSettings(encoder="frozen", head_solver="ridge")),
    # for CT: the tumour mask as a channel and the weight of each token in the tumour
    # pooling (the crop's margin is 80-90 % of its tokens and drowned the tumour's own
    # density in the whole-crop mean), and a soft-tissue window in which a necrotic core's
    # few tens of HU span most of the range. Seed-0 tuning (100 CT patients x 1,000 genes,
    # BENCHMARKS.md): 33 of 100 linked genes, 0 null, where frozen-ridge found 17 (the
    # baseline 39). With the stem's texture (its maps' mean and SD across the tumour's
    # patches; the tumour's fine texture survives the stem, not the transformer) and the
    # transformer token dropped per gene where leave-one-out prefers: seed 0, 200 CT
    # patients x 2,000 genes, 117 of 200 linked genes, heterogeneity 13, where the
    # tumour-pooled token found 93 and 0 (the baseline 117 and 13), 0 null either way.
    # At the study's own spacing (spacing_mm 0): slices resampled to 1 mm between a CT's
    # thicker slices blend two slices' texture; probes of the stem's texture found 122
    # linked genes where 119 (seed 0; 119 where 109 on the seed-3 cohort, diagnostics after
    # its report), and preprocessing is about 15 times faster. With m's SD also across the
    # tumour's core (core_texture), away from the edge where the contrast with the lung
    # outweighs the texture: seed 0, 120 linked genes where 117, heterogeneity 18 where 15.
    # With the tumour's 3-D shape in the geometry (shape_geometry): on the seed-4 cohort
    # (after its report) PyRadiomics' 14 shape features alone found 38 of 40 infiltration
    # genes, whose r the model trailed by 0.10; seed 0: the infiltration genes' mean r
    # 0.532 where 0.482 (the baseline 0.545), 120 linked genes either way. With the shape
    # carrying the ground-glass halo's irregular outline, the transformer token's columns
    # no longer earn their place in any gene's fit (token_columns "none"): seed 0, 125
    # linked genes where 120, heterogeneity 20 where 17. With first-order statistics of the
    # tumour's HU in the geometry (intensity_geometry; the 40/100 HU window clips a textured
    # tumour's tails, and the stem's maps of the clipped window miss them): seed 0, 130
    # linked genes where 125, heterogeneity 25 where 20 (400 patients: 154 where 151).
    # With the same statistics of a 4 mm shell around the tumour (shell_mm; the ground-glass
    # halo lies outside the mask and below the window): seed 0, the infiltration genes'
    # mean r 0.561 where 0.533 (the baseline 0.545), 131 linked genes where 130 (400
    # patients, probes: 158 where 154; 2 or 8 mm shells did less at both sizes)
    "frozen-ridge-ct": Recipe(
        "frozen-ridge-ct", dataclasses.replace(ModelConfig.preset("small"), pooling="tumour",
                                               geometry=True, stem_texture=True,
                                               core_texture=True),
        PreprocessSettings(spacing_mm=0.0, max_slices=16, slice_choice="spread",
                           tumour_channel=True, ct_windows=((40.0, 100.0),),
                           shape_geometry=True, intensity_geometry=True, shell_mm=4.0),
        TrainSettings(encoder="frozen", head_solver="ridge", token_columns="none")),
}


def _check(problems: list[str], source: str | os.PathLike | None) -> None:
    if problems:
        raise InputError(source, "bad training settings: " + "; ".join(problems))


def _fields(cls, values: Any, section: str, source: Path) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise InputError(source, f"'{section}' must be a JSON object")
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise InputError(source, f"unknown {section} setting(s) {', '.join(unknown)}")
    return values


def recipe_from_dict(document: dict[str, Any], source: Path) -> Recipe:
    known = {"name", "base", "model", "preprocessing", "training", "target", "markers"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise InputError(source, f"unknown recipe section(s) {', '.join(unknown)}")
    base_name = document.get("base", "paper")
    base = PRESETS.get(base_name) if isinstance(base_name, str) else None
    if base is None:
        raise InputError(source, f"unknown base {base_name!r} ({', '.join(PRESETS)})")
    preprocessing = {**base.preprocessing.to_dict(),
                     **_fields(PreprocessSettings, document.get("preprocessing", {}),
                               "preprocessing", source)}
    training = {**dataclasses.asdict(base.training),
                **_fields(TrainSettings, document.get("training", {}), "training", source)}
    validate(document, RECIPE, source)  # types and ranges, before anything uses a value
    model = document.get("model", base.model.to_dict())
    model = ModelConfig.load(model) if isinstance(model, str) else \
        ModelConfig.from_dict({**base.model.to_dict(), **model}, source)
    target = document.get("target", {})
    value, transform = target.get("value", base.value), target.get("transform", base.transform)
    try:
        recipe = Recipe(str(document.get("name", source.stem)), model,
                        PreprocessSettings.from_dict(preprocessing, source), TrainSettings(**training),
                        value, transform, tuple(document.get("markers", base.markers)))
    except (TypeError, ValueError) as error:
        raise InputError(source, f"bad recipe: {error}") from None
    _check(recipe.problems(), source)
    return recipe


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A preset (`paper`, `small`) or a JSON recipe file."""
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(path, f"neither a preset ({', '.join(PRESETS)}) nor a recipe file")
    return recipe_from_dict(read_json_object(path), path)
