"""One fold's training: MSE, AdamW, early stopping on the validation patients' mean r.

Runs alone or under `torchrun` (DistributedDataParallel: gloo on CPU, NCCL on GPU);
every process draws the same batches and takes its share of each, so the run does
not depend on the number of processes beyond float rounding. A checkpoint is written
after every epoch; a resumed fold continues from it and ends where an uninterrupted
run would.
"""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from RadioGenomicsLib.model import GenePredictor
from RadioGenomicsLib.model.predictor import slices_per_pass
from RadioGenomicsLib.pretrained import load_transunet_weights
from RadioGenomicsLib.progress import ProgressBar
from RadioGenomicsLib.stats import pearson_columns
from RadioGenomicsLib.training.checkpoint import (FoldState, load_checkpoint,
                                                  save_checkpoint)
from RadioGenomicsLib.training.data import PatientSlices
from RadioGenomicsLib.training.recipe import Recipe


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start_runtime(device: torch.device) -> Runtime:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Runtime(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    return Runtime(device, rank, world)


def epoch_rng(seed: int, fold: int, epoch: int) -> np.random.Generator:
    """Batches of an epoch depend only on (seed, fold, epoch): resumable and rank-free."""
    return np.random.default_rng([seed, fold, epoch])


@torch.no_grad()
def predict_patients(model: GenePredictor, data: PatientSlices, runtime: Runtime,
                     batch_patients: int) -> np.ndarray:
    """(patients, genes) values with all slices, eval mode (the mean over the k list)."""
    model.eval()
    out = []
    for x, mask, geometry in data.evaluation_batches(batch_patients):
        x, mask, geometry = (t.to(runtime.device) for t in (x, mask, geometry))
        with runtime.autocast():
            tokens = model.encode(x, mask, slices_per_pass(runtime.device))
            values = model.predict_genes(tokens, mask, geometry,
                                         token_shares=model.token_shares(x))
        out.append(values.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.n_genes), np.float32)


def validation_score(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-gene Pearson r over the validation patients (genes constant in either
    left out); with fewer than 3 patients, where r means nothing, minus the MSE."""
    if len(truth) < 3:
        return -float(np.mean((predicted - truth) ** 2))
    r, _ = pearson_columns(predicted, truth)
    return float(np.nanmean(r)) if np.isfinite(r).any() else -1.0


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, train: PatientSlices,
                 recipe: Recipe, rng: np.random.Generator, runtime: Runtime) -> float:
    model.train()
    settings = recipe.training
    losses = []
    for x, mask, geometry, target, batch_size in train.training_batches(
            settings.batch_patients, settings.train_slices, rng, runtime.rank, runtime.world):
        x, mask, geometry, target = (t.to(runtime.device) for t in (x, mask, geometry, target))
        with runtime.autocast():
            predicted = model(x, mask, geometry)
        per_patient = nn.functional.mse_loss(predicted.float(), target, reduction="none").mean(1)
        # DDP averages gradients over processes: scale so the result is the batch mean
        loss = per_patient.sum() * runtime.world / batch_size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(per_patient.mean().detach()))
    return float(np.mean(losses)) if losses else float("nan")


def target_scale(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's mean and standard deviation over the training patients (1 if constant)."""
    mean, std = targets.mean(axis=0), targets.std(axis=0)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def in_target_units(state: dict[str, torch.Tensor], mean: np.ndarray, std: np.ndarray
                    ) -> dict[str, torch.Tensor]:
    """Weights trained on standardised targets -> the same model in the target's units.

    Exact: a gene's patient value is a top-k mean of its token values, which commutes
    with a positive scale and a shift of that gene's output channel.
    """
    weight, bias = state["head.conv.weight"], state["head.conv.bias"]
    std_t, mean_t = torch.from_numpy(std).to(weight), torch.from_numpy(mean).to(bias)
    converted = {**state, "head.conv.weight": weight * std_t[:, None, None],
                 "head.conv.bias": bias * std_t + mean_t}
    if "head.geometry.weight" in state:  # the geometry's share of each gene scales alike
        converted["head.geometry.weight"] = state["head.geometry.weight"] * std_t[:, None]
    return converted


def start_model(recipe: Recipe, train: PatientSlices, device: torch.device
                ) -> tuple[GenePredictor, torch.optim.Optimizer]:
    """A fold's model as training starts (pretrained encoder if the recipe names one, the
    head's bias at the training mean, k chosen as the recipe says) and its optimizer."""
    settings = recipe.training
    model = recipe.build_model(train.slices(0).shape[1], train.targets.shape[1])
    if settings.pretrained:
        load_transunet_weights(model, settings.pretrained)
    model.set_output_bias(train.targets.mean(axis=0))
    if recipe.model.geometry:
        model.set_geometry_scale(train.geometry(range(len(train))).numpy())
    model.draw_top_k = settings.random_top_k
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    return model, optimizer


def fit_fold(recipe: Recipe, fold: int, train: PatientSlices, validation: PatientSlices,
             runtime: Runtime, checkpoint: Path, resume: bool, fingerprint: str
             ) -> tuple[dict[str, torch.Tensor], FoldState]:
    """Train one fold; returns the best epoch's weights (by validation mean r), in the
    target's units."""
    settings = recipe.training
    if settings.standardize_targets:
        mean, std = target_scale(train.targets)
        train, validation = train.standardized(mean, std), validation.standardized(mean, std)
    torch.manual_seed(settings.seed * 1000 + fold)
    model, optimizer = start_model(recipe, train, runtime.device)
    state, best = FoldState(), copy.deepcopy(model.state_dict())
    if resume and checkpoint.exists():
        saved = load_checkpoint(checkpoint, fingerprint)
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        torch.set_rng_state(saved.rng)
        state, best = saved.fold_state, saved.best
    wrapped = nn.parallel.DistributedDataParallel(model) if runtime.world > 1 else model
    with ProgressBar(settings.epochs, f"fold {fold + 1}/{settings.folds}",
                     initial=state.epoch) as bar:
        while not state.done and state.epoch < settings.epochs:
            loss = _train_epoch(wrapped, optimizer, train, recipe,
                                epoch_rng(settings.seed, fold, state.epoch), runtime)
            score = validation_score(predict_patients(model, validation, runtime,
                                                  settings.batch_patients), validation.targets)
            state.history.append({"epoch": state.epoch, "loss": loss, "validation_r": score})
            if score > state.best_score:
                state.best_score, state.best_epoch = score, state.epoch
                best = copy.deepcopy(model.state_dict())
            state.epoch += 1
            state.done = (state.epoch - 1 - state.best_epoch >= settings.patience
                          or state.epoch >= settings.epochs)
            if runtime.main:
                save_checkpoint(checkpoint, fingerprint, state, model.state_dict(), best,
                                optimizer.state_dict())
            runtime.barrier()
            bar.update(1, loss=loss, validation=score, best=state.best_score)
    if settings.standardize_targets:
        best = in_target_units(best, mean, std)
    return best, state
