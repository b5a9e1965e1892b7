"""Checkpoints after every epoch, without pickle: tensors in safetensors, the rest in JSON.

The optimiser's per-parameter state and the torch RNG state are tensors and travel in
the safetensors file; epoch, history, scores and the optimiser's hyper-parameters in its
JSON metadata. A checkpoint names the settings fingerprint it was made with, so that
`--resume` refuses one from other settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.errors import InputError


@dataclass
class FoldState:
    """Where a fold's training stands."""

    epoch: int = 0  # epochs completed
    best_score: float = float("-inf")
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    done: bool = False


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | os.PathLike, fingerprint: str, fold_state: FoldState,
                    model: dict[str, torch.Tensor], best: dict[str, torch.Tensor],
                    optimizer: dict[str, Any], extra: dict[str, torch.Tensor] | None = None
                    ) -> None:
    optim_tensors, optim_meta = _flatten_optimizer(optimizer)
    tensors = {**{f"model.{k}": v for k, v in model.items()},
               **{f"best.{k}": v for k, v in best.items()},
               **optim_tensors, "rng.torch": torch.get_rng_state(),
               **{f"extra.{k}": v for k, v in (extra or {}).items()}}
    meta = {"fingerprint": fingerprint, "fold_state": fold_state.__dict__, "optimizer": optim_meta}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"radiogenomics": json.dumps(meta)})


@dataclass
class Checkpoint:
    fold_state: FoldState
    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor
    extra: dict[str, torch.Tensor]


def load_checkpoint(path: str | os.PathLike, fingerprint: str) -> Checkpoint:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["radiogenomics"])
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise InputError(path, f"not a readable checkpoint ({error})") from None
    if meta["fingerprint"] != fingerprint:
        raise InputError(path, "checkpoint was made with other settings (recipe, cohort, "
                               "folds or seed); start afresh without --resume")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    return Checkpoint(FoldState(**meta["fold_state"]), part("model."), part("best."),
                      _unflatten_optimizer(tensors, meta["optimizer"]), tensors["rng.torch"],
                      part("extra."))
