"""One JSON schema per settings document, checked with `jsonschema` before any use.

Types, ranges and required keys of: model settings (model/config.py), preprocessing
settings (preprocess.PreprocessSettings), training recipes (training/recipe.py) and a
bundle's metadata.json. Ceilings (folds, crop size, slices, ...) keep a typo such as
`"folds": 1e9` from exhausting memory. A problem is one line naming the file, the key
and what is wrong.
"""

from __future__ import annotations

import os
from typing import Any

import jsonschema

from RadioGenomicsLib.errors import InputError

# JSON's 5.0 is a number, not a count: integers must be written as integers (and a
# boolean is not one)
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
    "integer": lambda _, value: isinstance(value, int) and not isinstance(value, bool),
    "array": lambda _, value: isinstance(value, (list, tuple)),  # settings made in code
})
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


def _int(low: int, high: int, **extra: Any) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high, **extra}


def _number(low: float, high: float, **extra: Any) -> dict:
    return {"type": "number", "minimum": low, "maximum": high, **extra}


def _fraction() -> dict:
    return {"type": "number", "minimum": 0, "exclusiveMaximum": 1}


MODEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "image_size": _int(16, 1024, multipleOf=16),
        "resnet_width": _int(1, 1024),
        "resnet_layers": {"type": "array", "items": _int(1, 64), "minItems": 3, "maxItems": 3},
        "norm_groups": _int(1, 1024),
        "hidden_size": _int(1, 8192),
        "num_layers": _int(1, 96),
        "num_heads": _int(1, 256),
        "mlp_dim": _int(1, 65536),
        "dropout": _fraction(),
        "head_dropout": _fraction(),
        "top_k": {"type": "array", "items": _int(1, 1_000_000), "minItems": 1, "maxItems": 64},
        "head_memory_mb": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000},
        "pooling": {"enum": ["topk", "mean", "attention", "tumour"]},
        "attention_dim": _int(1, 8192),
        "geometry": {"type": "boolean"},
        "stem_texture": {"type": "boolean"},
        "core_texture": {"type": "boolean"},
    },
}

PREPROCESSING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "spacing_mm": _number(0, 20),  # 0: keep the study's spacing
        "region": {"enum": ["auto", "brain", "body", "none"]},
        "skull_strip": {"type": "boolean"},
        "zscore": {"type": "boolean"},
        "min_tumour_area_mm2": _number(0, 1_000_000),
        "max_slices": _int(1, 1024),
        "margin_mm": _number(0, 1000),
        "min_crop_mm": _number(0, 10_000),
        "size": _int(16, 1024),
        "slice_choice": {"enum": ["largest", "spread"]},
        "tumour_channel": {"type": "boolean"},
        "region_labels": {"type": "array", "items": _int(1, 65535), "uniqueItems": True,
                          "maxItems": 16},
        "region_geometry": {"type": "boolean"},  # each region label's volume and share
        "shape_geometry": {"type": "boolean"},  # the tumour's 3-D shape
        "intensity_geometry": {"type": "boolean"},  # first-order statistics of its intensities
        "shell_mm": _number(0, 100),  # and of a shell this thick around it (0: none)
        "ct_windows": {"type": "array", "maxItems": 8,  # (centre, width) HU
                       "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                 "items": _number(-5000, 5000)}},
    },
}

TRAINING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "folds": _int(2, 100),
        "epochs": _int(1, 100_000),
        "patience": _int(1, 100_000),
        "validation_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
        "batch_patients": _int(1, 4096),
        "train_slices": _int(1, 1024),
        "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        "weight_decay": _number(0, 100),
        "seed": _int(0, 2**32 - 1),
        "pretrained": {"type": "string"},
        "standardize_targets": {"type": "boolean"},
        "random_top_k": {"type": "boolean"},
        "group_by": {"enum": ["patient", "site"]},
        "permute_targets": {"type": "boolean"},
        "encoder": {"enum": ["train", "frozen"]},
        "head_epochs": _int(1, 100_000),
        "head_patience": _int(1, 100_000),
        "head_learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        "refit": {"type": "boolean"},
        "head_solver": {"enum": ["adamw", "ridge"]},
        "fusion": {"type": "boolean"},
        "token_columns": {"enum": ["per_gene", "none"]},
        "texture_columns": {"enum": ["always", "per_gene"]},
        "permutations": _int(0, 100_000),
    },
}

RECIPE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "base": {"type": "string"},
        "model": {"oneOf": [{"type": "string"}, MODEL]},
        "preprocessing": PREPROCESSING,
        "training": TRAINING,
        "target": {
            "type": "object", "additionalProperties": False,
            "properties": {"value": {"enum": ["fpkm_uq", "tpm", "counts"]},
                           "transform": {"enum": ["log10p1", "log2p1", "none"]}},
        },
        "markers": {"type": "array", "items": {"type": "string", "maxLength": 100},
                    "maxItems": 1000},
    },
}

SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

BUNDLE_METADATA = {
    "type": "object",
    "required": ["format_version", "channels", "preprocessing", "target", "model",
                 "training_cohort", "folds", "weights"],
    "properties": {
        "format_version": _int(1, 1000),
        "library_version": {"type": "string"},
        "created": {"type": "string"},
        "channels": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64},
                     "minItems": 1, "maxItems": 16, "uniqueItems": True},
        "preprocessing": PREPROCESSING,
        "target": {"type": "object", "required": ["transform", "units"],
                   "properties": {"transform": {"type": "string"}, "units": {"type": "string"}}},
        "model": MODEL,
        "training_cohort": {"type": "object"},
        "folds": _int(1, 100),
        "weights": {"type": "object", "additionalProperties": SHA256, "maxProperties": 100},
        "markers": {"type": "array", "items": {"type": "string", "maxLength": 100},
                    "maxItems": 1000},
    },
}


def _key(path) -> str:
    return ".".join(str(part) for part in path) or "(the document)"


def validate(document: Any, schema: dict, source: str | os.PathLike | None,
             prefix: str = "") -> None:
    """Raise one InputError (the file, the key, the problem) for the most relevant problem."""
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(document))
    if error is not None:
        key = _key([*([prefix] if prefix else []), *error.absolute_path])
        message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
        raise InputError(source, f"{key}: {message}")
