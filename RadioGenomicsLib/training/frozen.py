"""Two-stage training that converges on a CPU: encode once, then train the head long.

Stage 1 encodes every patient's slices once with a frozen encoder (randomly initialised
from the recipe's seed, or TransUNet's ImageNet-21k import when the recipe names one)
and keeps the token embeddings in memory (float16). Stage 2 trains only the pooling and
the gene layer on those tokens, for hundreds of epochs: with mean or attention pooling a
step costs a few matrix products, not an encoder pass. A fold stops early on its
validation patients' loss (the z-scored MSE: every gene weighs alike, and noise genes do
not steer the choice as they do a mean r), then, if the recipe says so, is fitted again
on the whole training fold for the chosen number of epochs, so that the tenth held back
for stopping is not lost. The shipped fold model is the frozen encoder with the trained
head: a normal GenePredictor, read and run like any other.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.model import GenePredictor, ModelConfig
from RadioGenomicsLib.model.predictor import slices_per_pass
from RadioGenomicsLib.progress import ProgressBar, progress
from RadioGenomicsLib.training.checkpoint import FoldState
from RadioGenomicsLib.training.data import PatientSlices
from RadioGenomicsLib.training.recipe import LINEAR_POOLINGS, Recipe

ENCODER_PREFIX = "encoder."


def frozen_encoder(recipe: Recipe, channels: int, genes: int) -> GenePredictor:
    """The model whose encoder every fold shares (the head is trained per fold)."""
    from RadioGenomicsLib.pretrained import load_transunet_weights

    torch.manual_seed(recipe.training.seed)
    model = recipe.build_model(channels, genes)
    if recipe.training.pretrained:
        load_transunet_weights(model, recipe.training.pretrained)
    return model.eval()


@dataclass
class FrozenTokens:
    """Every patient's tokens from the frozen encoder, and its tumour geometry."""

    encoder: GenePredictor
    tokens: dict[str, np.ndarray]  # patient -> (S, T, hidden) float16
    geometry: dict[str, np.ndarray]  # patient -> (n_geometry,) float32
    # tumour pooling: patient -> (S, T) each token's share of tumour (else empty)
    shares: dict[str, np.ndarray] = field(default_factory=dict)


def encoder_key(model: GenePredictor) -> str:
    """The frozen encoder's content (its weights), for the token cache's folder name."""
    digest = hashlib.sha256(f"token_size {model.config.token_size}".encode())
    for name, tensor in sorted(model.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


@torch.no_grad()
def encode_patients(model: GenePredictor, data: PatientSlices, device: torch.device,
                    cache: Path | None = None) -> FrozenTokens:
    """Every patient's cached slices through the frozen encoder, once; with `cache`, the
    tokens are kept in cache/<encoder weights' hash>/<slice key>.npy for later runs."""
    model.to(device)
    folder = cache / encoder_key(model) if cache is not None else None
    tokens, geometry, shares = {}, {}, {}
    for index in progress(range(len(data)), "encoding the slices once (frozen encoder)"):
        patient = data.patients[index]
        stored = folder / f"{data.keys[patient]}.npy" if folder is not None else None
        cached = stored is not None and stored.exists()
        if not cached or model.config.pooling == "tumour":
            x = torch.from_numpy(np.asarray(data.slices(index), np.float32))[None].to(device)
        if model.config.pooling == "tumour":
            shares[patient] = model.token_shares(x)[0].cpu().numpy()
        if cached:
            tokens[patient] = np.load(stored)
        else:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=device)
            tokens[patient] = model.encode(x, mask, slices_per_pass(device))[0] \
                .to(torch.float16).cpu().numpy()
            if stored is not None:
                folder.mkdir(parents=True, exist_ok=True)
                with atomic_path(stored) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, tokens[patient])
        geometry[patient] = data.geometry([index])[0].numpy()
    return FrozenTokens(model.cpu(), tokens, geometry, shares)


def token_batch(stacks: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(S_i, T, hidden) arrays -> tokens (B, S_max, T, hidden) float32 and slice mask."""
    longest = max(len(s) for s in stacks)
    tokens = torch.zeros((len(stacks), longest, *stacks[0].shape[1:]), dtype=torch.float32)
    mask = torch.zeros((len(stacks), longest), dtype=torch.bool)
    for i, stack in enumerate(stacks):
        tokens[i, :len(stack)] = torch.from_numpy(stack.astype(np.float32))
        mask[i, :len(stack)] = True
    return tokens, mask


def share_batch(shares: Sequence[np.ndarray], longest: int) -> torch.Tensor:
    """(S_i, T) shares of tumour -> (B, S_max, T), zeros for padding slices."""
    batch = torch.zeros((len(shares), longest, shares[0].shape[1]), dtype=torch.float32)
    for i, share in enumerate(shares):
        batch[i, :len(share)] = torch.from_numpy(share)
    return batch


def batches(frozen: FrozenTokens, patients: Sequence[str], size: int,
            rng: np.random.Generator | None = None
            ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor,
                                torch.Tensor | None]]:
    """(patient indices, tokens, mask, geometry, tumour shares or None) in shuffled (rng)
    or given order."""
    order = rng.permutation(len(patients)) if rng is not None else np.arange(len(patients))
    for start in range(0, len(order), size):
        chosen = order[start:start + size]
        names = [patients[i] for i in chosen]
        geometry = torch.from_numpy(np.stack([frozen.geometry[p] for p in names]))
        tokens, mask = token_batch([frozen.tokens[p] for p in names])
        shares = (share_batch([frozen.shares[p] for p in names], mask.shape[1])
                  if frozen.shares else None)
        yield chosen, tokens, mask, geometry, shares


@torch.no_grad()
def predict_tokens(model: GenePredictor, frozen: FrozenTokens, patients: Sequence[str],
                   batch_patients: int) -> np.ndarray:
    """(patients, genes) values from cached tokens, eval mode."""
    model.eval()
    out = [model.predict_genes(batch, mask, geometry, token_shares=shares).float().numpy()
           for _, batch, mask, geometry, shares in batches(frozen, patients, batch_patients)]
    return np.concatenate(out) if out else np.zeros((0, model.n_genes), np.float32)


def _head_parameters(model: GenePredictor) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if not name.startswith(ENCODER_PREFIX)]


def _train(model: GenePredictor, frozen: FrozenTokens, patients: Sequence[str],
           targets: np.ndarray, epochs: int, recipe: Recipe, fold: int, bar_text: str,
           validation: tuple[Sequence[str], np.ndarray] | None = None
           ) -> tuple[FoldState, dict[str, torch.Tensor] | None]:
    """AdamW on the head alone for `epochs` epochs; with `validation`, the validation loss
    after every epoch, early stopping, and the best epoch's weights (else None)."""
    settings = recipe.training
    optimizer = torch.optim.AdamW(_head_parameters(model), lr=settings.head_learning_rate,
                                  weight_decay=settings.weight_decay)
    state, best = FoldState(), None
    target = torch.from_numpy(np.asarray(targets, np.float32))
    with ProgressBar(epochs, bar_text) as bar:
        for epoch in range(epochs):
            model.train()
            rng = np.random.default_rng([settings.seed, fold, epoch, 17])
            losses = []
            for chosen, batch, mask, geometry, shares in batches(frozen, patients,
                                                                 settings.batch_patients, rng):
                predicted = model.predict_genes(batch, mask, geometry, token_shares=shares)
                loss = nn.functional.mse_loss(predicted, target[chosen])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            entry = {"epoch": epoch, "loss": float(np.mean(losses))}
            if validation is not None:
                predicted = predict_tokens(model, frozen, validation[0], settings.batch_patients)
                score = -float(np.mean((predicted - validation[1]) ** 2))
                entry["validation_loss"] = -score
                if score > state.best_score:
                    state.best_score, state.best_epoch = score, epoch
                    best = copy.deepcopy(model.state_dict())
            state.history.append(entry)
            state.epoch = epoch + 1
            bar.update(1, **{k: v for k, v in entry.items() if k != "epoch"})
            if validation is not None and epoch - state.best_epoch >= settings.head_patience:
                break
    state.done = True
    return state, best


def fit_head_fold(recipe: Recipe, fold: int, frozen: FrozenTokens, train, validation
                  ) -> tuple[dict[str, torch.Tensor], FoldState]:
    """One fold's head on frozen tokens: early stopping on the validation loss, then (the
    recipe's `refit`) the same number of epochs on training + validation patients.
    Targets arrive as the loop gives them (z-scored when the recipe says so)."""
    settings = recipe.training
    torch.manual_seed(settings.seed * 1000 + fold)

    encoder = frozen.encoder

    def fresh(targets: np.ndarray) -> GenePredictor:
        model = recipe.build_model(encoder.in_channels, targets.shape[1])
        model.load_state_dict({k: v for k, v in encoder.state_dict().items()
                               if k.startswith(ENCODER_PREFIX)}, strict=False)
        model.set_output_bias(targets.mean(axis=0))
        if recipe.model.geometry:  # standardised by the training patients alone
            model.set_geometry_scale(np.stack([frozen.geometry[p] for p in train.patients]))
        model.draw_top_k = settings.random_top_k
        for parameter in model.encoder.parameters():
            parameter.requires_grad_(False)
        return model

    model = fresh(train.targets)
    state, best = _train(model, frozen, train.patients, train.targets, settings.head_epochs,
                         recipe, fold, f"fold {fold + 1}/{settings.folds} head",
                         (validation.patients, validation.targets))
    if settings.refit and state.best_epoch >= 0:
        patients = train.patients + validation.patients
        targets = np.concatenate([train.targets, validation.targets])
        torch.manual_seed(settings.seed * 1000 + fold)
        refitted = fresh(targets)
        _train(refitted, frozen, patients, targets, state.best_epoch + 1, recipe, fold,
               f"fold {fold + 1}/{settings.folds} refit on all {len(patients)}")
        best = refitted.state_dict()
    return best, state


RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))  # as the radiomics baseline


def pooled_token(frozen: FrozenTokens, patient: str, config: ModelConfig) -> np.ndarray:
    """(embedding_size,) a patient's mean token, weighted by each token's share of tumour
    for tumour pooling, its stem means' SD in place of their squares' mean for a
    stem-texture model [and their SD over the tumour's core] (`GenePredictor.embedding`)."""
    from RadioGenomicsLib.runtime.head import texture_embedding, tumour_mean

    tokens = frozen.tokens[patient].astype(np.float32).reshape(-1, frozen.tokens[patient].shape[-1])
    shares = frozen.shares[patient] if frozen.shares else None
    pooled = tumour_mean(tokens, shares.reshape(-1)) if shares is not None else tokens.mean(axis=0)
    return texture_embedding(tokens, pooled, shares, config)


def patient_features(frozen: FrozenTokens, patients: Sequence[str], config: ModelConfig
                     ) -> np.ndarray:
    """(patients, embedding_size [+ n_geometry]) each patient's embedding [and geometry]."""
    features = np.stack([pooled_token(frozen, p, config) for p in patients])
    if config.geometry:
        features = np.c_[features, np.stack([frozen.geometry[p] for p in patients])]
    return features


def per_gene_ridge(x: np.ndarray, targets: np.ndarray, starts: Sequence[int] = (0,)
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RidgeCV on standardised features, the penalty chosen per gene by leave-one-out:
    (coefficients (genes, features), intercepts, alphas). Each of `starts` is a fit on the
    columns from there on (zero weights before); with several, each gene keeps the fit of
    lowest leave-one-out error: beside a stem-texture token's few texture values, the
    transformer's random 192-column token took the shared penalty and lost CT's texture,
    and at 200 patients the stem's texture columns can crowd out the geometry's hand
    statistics (BENCHMARKS.md)."""
    from sklearn.linear_model import RidgeCV

    def fit(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        ridge = RidgeCV(alphas=np.asarray(RIDGE_ALPHAS), alpha_per_target=True,
                        store_cv_results=len(starts) > 1)
        ridge.fit(x[:, start:], targets)
        coefficients = np.zeros((targets.shape[1], x.shape[1]))
        coefficients[:, start:] = np.atleast_2d(ridge.coef_)
        error = ridge.cv_results_.mean(axis=0).min(axis=-1) if len(starts) > 1 else None
        return (coefficients, np.broadcast_to(ridge.intercept_, (targets.shape[1],)),
                np.broadcast_to(ridge.alpha_, (targets.shape[1],)), error)

    fits = [fit(start) for start in starts]
    if len(fits) == 1:
        return fits[0][:3]
    best = np.argmin(np.stack([f[3] for f in fits]), axis=0)  # per gene, the first on ties
    genes = np.arange(targets.shape[1])
    return tuple(np.stack([f[part] for f in fits])[best, genes] for part in range(3))


def standardized_ridge(x: np.ndarray, targets: np.ndarray, starts: Sequence[int]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """per_gene_ridge on `x` standardised by its own rows (constant columns left at
    scale 1): (coefficients of the standardised features, intercepts, alphas, centre,
    scale)."""
    centre, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (*per_gene_ridge((x - centre) / scale, targets, starts), centre, scale)


def ridge_oof(x: np.ndarray, targets: np.ndarray, folds: np.ndarray, starts: Sequence[int]
              ) -> np.ndarray:
    """Out-of-fold predictions of the ridge head (patients x genes) from every patient's
    features `x` (`patient_features`): each fold's rows predicted by standardized_ridge
    fitted on the others, as `fit_ridge_head` fits a fold model, without building one;
    the permutation test re-runs it on shuffled targets."""
    predicted = np.empty(targets.shape)
    for fold in np.unique(folds):
        held_out = folds == fold
        coefficients, intercepts, _, centre, scale = standardized_ridge(
            x[~held_out], targets[~held_out], starts)
        predicted[held_out] = ((x[held_out] - centre) / scale) @ coefficients.T + intercepts
    return predicted


def ridge_starts(recipe: Recipe) -> tuple[int, ...]:
    """per_gene_ridge's candidate fits for a model's embedding [token H | stem texture |
    geometry]: token_columns drops the token's columns per gene or always, texture_columns
    the stem texture's per gene (after the token's) or never."""
    if not recipe.model.stem_texture:
        return (0,)
    hidden, texture_end = recipe.model.hidden_size, recipe.model.embedding_size
    starts = (0, hidden) if recipe.training.token_columns == "per_gene" else (hidden,)
    return starts + ((texture_end,) if recipe.training.texture_columns == "per_gene" else ())


def fit_ridge_head(recipe: Recipe, fold: int, frozen: FrozenTokens, train, validation
                   ) -> tuple[dict[str, torch.Tensor], FoldState]:
    """The gene layer (and geometry layer) of a mean- or tumour-pooling model in closed
    form: ridge on the standardised pooled token [and geometry] of every training patient
    (the validation patients too: the penalty is chosen per gene by leave-one-out, no
    early stopping), written into a GenePredictor whose value is exactly the ridge's."""
    if recipe.model.pooling not in LINEAR_POOLINGS:
        raise ValueError("head_solver ridge needs mean or tumour pooling (a linear model)")
    patients = list(train.patients) + list(validation.patients)
    targets = np.concatenate([train.targets, validation.targets]).astype(np.float64)
    x = patient_features(frozen, patients, recipe.model).astype(np.float64)
    coefficients, intercepts, alphas, centre, scale = standardized_ridge(
        x, targets, ridge_starts(recipe))
    size = recipe.model.embedding_size
    model = recipe.build_model(frozen.encoder.in_channels, targets.shape[1])
    model.load_state_dict({k: v for k, v in frozen.encoder.state_dict().items()
                           if k.startswith(ENCODER_PREFIX)}, strict=False)
    weight = coefficients[:, :size] / scale[:size]
    bias = intercepts - weight @ centre[:size]
    with torch.no_grad():
        if recipe.model.geometry:  # the model standardises its geometry with these
            model.geometry_mean.copy_(torch.from_numpy(centre[size:].astype(np.float32)))
            model.geometry_std.copy_(torch.from_numpy(scale[size:].astype(np.float32)))
            model.head.geometry.weight.copy_(torch.from_numpy(
                coefficients[:, size:].astype(np.float32)))
        model.head.conv.weight.copy_(torch.from_numpy(weight.astype(np.float32))[:, :, None])
        model.head.conv.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)))
    history = {"epoch": 0, "patients": len(patients), "alpha_median": float(np.median(alphas)),
               "genes_at_largest_alpha": int((alphas == max(RIDGE_ALPHAS)).sum())}
    if recipe.model.stem_texture:
        hidden, texture_end = recipe.model.hidden_size, recipe.model.embedding_size
        history["genes_without_transformer_token"] = int((coefficients[:, :hidden] == 0)
                                                         .all(axis=1).sum())
        history["genes_without_stem_texture"] = int(
            (coefficients[:, hidden:texture_end] == 0).all(axis=1).sum())
    state = FoldState(epoch=1, best_score=0.0, best_epoch=0, done=True, history=[history])
    return model.state_dict(), state
