"""Cross-validated training: a cohort and its expression -> a model bundle and its report.

Everything that can fail on the input is checked before the first epoch: the manifest
and its match with the expression, the fold sizes, the genes left after each training
fold's median-zero filter, and the preprocessing of every patient (cached). Each
patient is then predicted once, by the fold model that never saw it, and those
out-of-fold predictions are the evaluation. The fold models, cut to the genes that
every fold kept, are the shipped ensemble.
"""

from __future__ import annotations

import datetime
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.integrity import read_manifest, write_manifest
from RadioGenomicsLib.outputs import Output, check_outputs, mark_complete
from RadioGenomicsLib.bundle import BundleMetadata, write_bundle
from RadioGenomicsLib.cohort import channel_columns, validate_cohort
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.expression import ExpressionMatrix, build_matrix, read_matrix
from RadioGenomicsLib.preprocess import geometry_names, model_channels
from RadioGenomicsLib.pretrained import load_transunet_weights
from RadioGenomicsLib.report import print_summary, write_model_card, write_report
from RadioGenomicsLib.stats import MIN_PATIENTS, gene_statistics
from RadioGenomicsLib.training.cache import SliceCache, preprocess_cohort
from RadioGenomicsLib.training.checkpoint import load_checkpoint, save_checkpoint
from RadioGenomicsLib.training.data import PatientSlices
from RadioGenomicsLib.training.folds import assign_folds, inner_validation_split
from RadioGenomicsLib.training.loop import Runtime, fit_fold, predict_patients
from RadioGenomicsLib.training.recipe import Recipe

FUSION_REPORT = "fusion-report"  # the fusion method's report, beside the model's
HEAD_KEYS = ("head.conv.weight", "head.conv.bias", "head.geometry.weight")  # a row per gene


@dataclass
class TrainingInputs:
    """The checked cohort: image paths, targets and the fold of every patient."""

    cohort: pd.DataFrame  # manifest rows, indexed by patient_id
    channels: list[str]
    targets: pd.DataFrame  # patients x genes, transformed
    gene_names: pd.Series  # gene_id -> symbol
    folds: pd.Series  # patient -> fold
    fold_genes: list[list[str]]  # genes kept by each training fold's median-zero filter
    notes: list[str]


def load_expression(path: str, sample_sheet: str | None, recipe: Recipe
                    ) -> tuple[ExpressionMatrix, str]:
    """A matrix from `radiogenomics expression` (already transformed) or raw GDC/Xena/plain."""
    if sample_sheet is None and Path(path).is_file():
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline().split("\t")[0].strip()
        if first == "patient_id":
            return read_matrix(path), f"matrix {path} (used as given: already transformed)"
    matrix, summary = build_matrix(path, sample_sheet, value=recipe.value,
                                   transform=recipe.transform, drop_median_zero_genes=False)
    return matrix, f"{summary.source}: {summary.patients} patients, {summary.files_read} files"


def check_inputs(manifest: str, expression: str, sample_sheet: str | None,
                 recipe: Recipe) -> TrainingInputs:
    matrix, source = load_expression(expression, sample_sheet, recipe)
    cohort = validate_cohort(manifest, matrix.values, allow_extra_expression=True)
    notes = [source]
    extra = sorted(set(matrix.values.index) - set(cohort.index))
    if extra:
        notes.append(f"{len(extra)} patient(s) with expression but no images are not used: "
                     + ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""))
    targets = matrix.values.loc[cohort.index].astype(np.float64)
    if not np.isfinite(targets.to_numpy()).all():
        raise InputError(expression, "the expression of the imaged patients has missing values")
    if recipe.training.permute_targets:
        order = np.random.default_rng([recipe.training.seed, 7919]).permutation(len(targets))
        targets = pd.DataFrame(targets.to_numpy()[order], index=targets.index,
                               columns=targets.columns)
        notes.append(f"CONTROL: expression rows permuted across patients (seed "
                     f"{recipe.training.seed}): every gene found is a false positive")
    folds = assign_folds(list(cohort.index), recipe.training.folds, recipe.training.seed, manifest,
                         recipe.training.group_by)
    smallest = int(folds.value_counts().min())
    if smallest < MIN_PATIENTS:
        raise InputError(manifest, f"{len(folds)} patients in {recipe.training.folds} folds leave "
                                   f"{smallest} in a fold; each needs {MIN_PATIENTS} for its "
                                   "correlations")
    fold_genes = []
    for fold in range(recipe.training.folds):
        train = targets.loc[folds.index[folds != fold]]
        kept = train.columns[train.median(axis=0) != 0].tolist()
        if not kept:
            raise InputError(expression, f"no gene is left in fold {fold + 1} after dropping the "
                                         "genes whose median over its training patients is zero")
        fold_genes.append(kept)
    common = set.intersection(*(set(g) for g in fold_genes))
    if not common:
        raise InputError(expression, "no gene is kept by every fold's median-zero filter")
    names = matrix.genes["gene_name"].reindex(targets.columns).fillna("")
    return TrainingInputs(cohort.loc[folds.index], channel_columns(cohort.reset_index()),
                          targets.loc[folds.index], names, folds, fold_genes, notes)


def _fold_data(inputs: TrainingInputs, cache: SliceCache, keys: dict[str, str], fold: int,
               seed: int, fraction: float) -> tuple[PatientSlices, PatientSlices, PatientSlices]:
    genes = inputs.fold_genes[fold]
    held_out = inputs.folds.index[inputs.folds == fold].tolist()
    train, validation = inner_validation_split(
        inputs.folds.index[inputs.folds != fold].tolist(), fraction, seed + fold)

    def part(patients: list[str]) -> PatientSlices:
        return PatientSlices(cache, keys, inputs.targets.loc[patients, genes].to_numpy(), patients)

    return part(train), part(validation), part(held_out)


def _restrict_head(state: dict[str, torch.Tensor], fold_genes: list[str],
                   common: list[str]) -> dict[str, torch.Tensor]:
    """The fold model's head cut to the genes every fold kept, in the common order."""
    position = {gene: i for i, gene in enumerate(fold_genes)}
    rows = torch.tensor([position[g] for g in common])
    return {k: (v[rows] if k in HEAD_KEYS else v) for k, v in state.items()}


def run_folds(inputs: TrainingInputs, recipe: Recipe, runtime: Runtime, cache: SliceCache,
              keys: dict[str, str], work: Path, resume: bool
              ) -> tuple[list[dict[str, torch.Tensor]], pd.DataFrame, list[dict], object]:
    """Train every fold (or take it from a finished checkpoint): states, OOF predictions,
    histories and the frozen tokens (None when the encoder was trained)."""
    settings = recipe.training
    fingerprint = _fingerprint(recipe, inputs)
    frozen = _frozen_tokens(inputs, recipe, runtime, cache, keys) \
        if settings.encoder == "frozen" else None
    states, oof_parts, histories = [], [], []
    for fold in range(settings.folds):
        done = work / f"fold_{fold}.done.safetensors"
        train, validation, held_out = _fold_data(inputs, cache, keys, fold, settings.seed,
                                                 settings.validation_fraction)
        if resume and done.exists():
            saved = load_checkpoint(done, fingerprint)
            best, state, oof = saved.best, saved.fold_state, saved.extra["oof"].numpy()
        else:
            if frozen is not None:
                best, state, oof = _fit_frozen_fold(recipe, fold, frozen, train, validation,
                                                    held_out)
            else:
                best, state = fit_fold(recipe, fold, train, validation, runtime,
                                       work / f"fold_{fold}.safetensors", resume, fingerprint)
                model = _model_from(recipe, best, train)
                oof = predict_patients(model.to(runtime.device), held_out, runtime,
                                       settings.batch_patients)
            if runtime.main:
                save_checkpoint(done, fingerprint, state, {}, best, {"state": {},
                                "param_groups": []}, extra={"oof": torch.from_numpy(oof)})
        states.append(best)
        oof_parts.append(pd.DataFrame(oof, index=held_out.patients,
                                      columns=inputs.fold_genes[fold]))
        score = ({"best_validation_loss": -state.best_score} if frozen is not None
                 else {"best_validation_r": state.best_score})
        histories.append({"fold": fold, "best_epoch": state.best_epoch, **score,
                          "epochs": state.epoch, "history": state.history})
    common = common_genes(inputs)
    states = [_restrict_head(s, genes, common) for s, genes in zip(states, inputs.fold_genes)]
    oof = pd.concat([part[common] for part in oof_parts]).loc[inputs.targets.index]
    oof.index.name = "patient_id"
    return states, oof, histories, frozen


def common_genes(inputs: TrainingInputs) -> list[str]:
    """The genes that every training fold's median-zero filter kept, in the targets' order."""
    kept = set.intersection(*(set(genes) for genes in inputs.fold_genes))
    return [g for g in inputs.targets.columns if g in kept]


def fusion_features(inputs: TrainingInputs, recipe: Recipe, frozen, manifest: str,
                    cache_dir: Path | None = None) -> pd.DataFrame:
    """The fusion method's features: the frozen encoder's patient embedding (pooled token
    [and geometry]) beside the radiomics baseline's features (its cache), one ridge per
    gene fitted on each training fold (`fusion_oof`), exactly as the baseline fits its
    own. cache_dir: the radiomic features' cache (the baseline's default when None)."""
    from RadioGenomicsLib.training.baseline import (FeatureCache, cohort_features,
                                                    default_cache_dir, usable_features)
    from RadioGenomicsLib.training.frozen import patient_features

    patients = list(inputs.folds.index)
    radiomics = cohort_features(inputs.cohort, inputs.channels, recipe.preprocessing,
                                FeatureCache(cache_dir or default_cache_dir()),
                                manifest).loc[patients]
    radiomics, _ = usable_features(radiomics)
    embedding = patient_features(frozen, patients, recipe.model)
    return pd.concat([pd.DataFrame(embedding, index=patients,
                                   columns=[f"embedding_{i}" for i in range(embedding.shape[1])]),
                      radiomics], axis=1)


def fusion_oof(inputs: TrainingInputs, features: pd.DataFrame) -> pd.DataFrame:
    """The fusion method's out-of-fold predictions from `fusion_features`."""
    from RadioGenomicsLib.training.baseline import DEFAULT_ALPHAS, cross_validate

    return cross_validate(features, inputs.targets[common_genes(inputs)], inputs.folds,
                          DEFAULT_ALPHAS)[0]


def permutation_nulls(inputs: TrainingInputs, recipe: Recipe, frozen,
                      fusion: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The permutation test's null (permutations x common genes) of the ridge head on the
    frozen tokens, and of the fusion given its features (else None)."""
    from RadioGenomicsLib.training.baseline import DEFAULT_ALPHAS, ridge_null
    from RadioGenomicsLib.training.frozen import patient_features, ridge_oof, ridge_starts
    from RadioGenomicsLib.training.permutation import permutation_null

    patients = list(inputs.folds.index)
    targets = inputs.targets.loc[patients, common_genes(inputs)]
    x = patient_features(frozen, patients, recipe.model).astype(np.float64)
    folds, starts = inputs.folds.to_numpy(), ridge_starts(recipe)
    model = permutation_null(lambda y: ridge_oof(x, y, folds, starts), targets.to_numpy(),
                             recipe.training.permutations, recipe.training.seed,
                             "permuted cross-validations (the model's null)")
    return model, (ridge_null(fusion, targets, inputs.folds, DEFAULT_ALPHAS, recipe,
                              "the fusion's") if fusion is not None else None)


def _frozen_tokens(inputs: TrainingInputs, recipe: Recipe, runtime: Runtime, cache: SliceCache,
                   keys: dict[str, str]):
    """Stage 1 of the two-stage mode: the shared frozen encoder and every patient's tokens."""
    from RadioGenomicsLib.training.frozen import encode_patients, frozen_encoder

    patients = list(inputs.targets.index)
    everyone = PatientSlices(cache, keys, np.zeros((len(patients), 1)), patients)
    encoder = frozen_encoder(recipe, everyone.slices(0).shape[1], 1)
    return encode_patients(encoder, everyone, runtime.device, cache.folder / "tokens")


def _fit_frozen_fold(recipe: Recipe, fold: int, frozen, train: PatientSlices,
                     validation: PatientSlices, held_out: PatientSlices):
    """Stage 2 for one fold: (weights in the target's units, state, OOF predictions)."""
    from RadioGenomicsLib.training.frozen import fit_head_fold, fit_ridge_head, predict_tokens
    from RadioGenomicsLib.training.loop import in_target_units, target_scale

    if recipe.training.standardize_targets:
        mean, std = target_scale(train.targets)
        train, validation = train.standardized(mean, std), validation.standardized(mean, std)
    fit = fit_ridge_head if recipe.training.head_solver == "ridge" else fit_head_fold
    best, state = fit(recipe, fold, frozen, train, validation)
    if recipe.training.standardize_targets:
        best = in_target_units(best, mean, std)
    model = _model_from(recipe, best, train)
    return best, state, predict_tokens(model, frozen, held_out.patients,
                                       recipe.training.batch_patients)


def _model_from(recipe: Recipe, state: dict[str, torch.Tensor], data: PatientSlices):
    model = recipe.build_model(data.slices(0).shape[1], data.targets.shape[1])
    model.load_state_dict(state)
    return model


def _fingerprint(recipe: Recipe, inputs: TrainingInputs) -> str:
    import hashlib

    digest = hashlib.sha256(recipe.fingerprint().encode())
    digest.update(",".join(f"{p}:{f}" for p, f in inputs.folds.items()).encode())
    digest.update(",".join(inputs.targets.columns).encode())
    return digest.hexdigest()


def write_trained_bundle(out: Path, recipe: Recipe, inputs: TrainingInputs,
                         states: list[dict[str, torch.Tensor]], oof: pd.DataFrame,
                         histories: list[dict], manifest: str,
                         fusion: pd.DataFrame | None = None,
                         nulls: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
                         ) -> dict:
    """The bundle folder with its report inside (and the fusion method's report beside
    it), appearing whole or not at all; nulls: the permutation test's null of the model
    and of the fusion (`permutation_nulls`), when the recipe asks for it."""
    truth = inputs.targets[oof.columns]
    stats = gene_statistics(oof, truth, null_r=nulls[0])
    genes = pd.DataFrame({
        "gene_id": oof.columns, "gene_name": inputs.gene_names.reindex(oof.columns).to_numpy(),
        "train_mean": truth.mean(axis=0).to_numpy(), "train_std": truth.std(axis=0).to_numpy(),
        "validation_r": stats["pearson_r"].to_numpy(), "validation_p_adj": stats["p_adj"].to_numpy(),
    })
    if nulls[0] is not None:  # the permutation test, not Holm-Sidak, then says what is reliable
        genes["validation_p_perm"] = stats["p_perm"].to_numpy()
    cohort = {"name": recipe.name, "manifest": str(manifest), "patients": len(truth),
              "genes": len(oof.columns), "folds": recipe.training.folds,
              "seed": recipe.training.seed, "trained": datetime.date.today().isoformat(),
              "recipe": recipe.to_dict(), "notes": inputs.notes,
              "fold_training": [{k: v for k, v in h.items() if k != "history"}
                                for h in histories]}
    metadata = BundleMetadata(channels=inputs.channels, preprocessing=recipe.preprocessing.to_dict(),
                              model=recipe.model, target_transform=recipe.transform_name,
                              target_units=recipe.target_units, training_cohort=cohort,
                              markers=recipe.markers)
    with atomic_path(out) as staging:
        write_bundle(staging, states, metadata, genes)
        summary = write_report(staging / "report", oof, truth,
                               dict(zip(genes["gene_id"], genes["gene_name"])),
                               folds=inputs.folds.loc[oof.index], markers=recipe.markers,
                               command=None, null_r=nulls[0])
        pd.DataFrame([{"fold": h["fold"], **e} for h in histories for e in h["history"]]).to_csv(
            staging / "report" / "training_history.tsv", sep="\t", index=False)
        write_model_card(staging / "report", f"{recipe.name}: {len(truth)} patients, "
                                             f"{recipe.training.folds} folds, out-of-fold r")
        if fusion is not None:
            write_report(staging / FUSION_REPORT, fusion, truth,
                         dict(zip(genes["gene_id"], genes["gene_name"])),
                         folds=inputs.folds.loc[fusion.index], markers=recipe.markers,
                         command=None, null_r=nulls[1])
        write_manifest(staging, read_manifest(staging))  # the report too (weights not re-hashed)
        mark_complete(staging, "train")
    return summary


def train(manifest: str, expression: str, sample_sheet: str | None, out: Path, recipe: Recipe,
          runtime: Runtime, resume: bool = False, cache_dir: Path | None = None) -> dict:
    """The whole cross-validated training; returns the evaluation summary."""
    from RadioGenomicsLib.training.cache import default_cache_dir

    work = out.with_name(out.name + ".work")
    check_outputs("train", [Output(out, "folder"), Output(work, "folder", "--out (its .work)")],
                  [manifest, expression, sample_sheet, recipe.training.pretrained or None])
    if recipe.training.permutations and not (recipe.training.encoder == "frozen"
                                             and recipe.training.head_solver == "ridge"):
        raise InputError(None, f"--permutations {recipe.training.permutations}: the "
                               "permutation test re-runs the cross-validation hundreds of "
                               "times; it needs a closed-form head (encoder frozen, "
                               "head_solver ridge: the frozen-ridge presets); for a trained "
                               "model run the control --permute-targets instead")
    inputs = check_inputs(manifest, expression, sample_sheet, recipe)
    if recipe.training.pretrained:  # a checkpoint that does not fit fails now, not in fold 1
        load_transunet_weights(recipe.build_model(model_channels(
                                   inputs.channels, recipe.preprocessing.to_dict()), 1),
                               recipe.training.pretrained)
    if runtime.main:
        for note in inputs.notes:
            print(f"note: {note}", file=sys.stderr)
    cache = SliceCache(cache_dir or default_cache_dir(),
                       len(geometry_names(recipe.preprocessing)))
    if runtime.main:
        keys = preprocess_cohort(inputs.cohort, inputs.channels, recipe.preprocessing, cache)
    runtime.barrier()
    if not runtime.main:
        keys = preprocess_cohort(inputs.cohort, inputs.channels, recipe.preprocessing, cache)
    if not resume and work.exists() and runtime.main:
        shutil.rmtree(work)
    if runtime.main:
        work.mkdir(parents=True, exist_ok=True)
        mark_complete(work, "train")  # here: the folder is train's own (checkpoints to resume)
    runtime.barrier()
    states, oof, histories, frozen = run_folds(inputs, recipe, runtime, cache, keys, work, resume)
    summary = {}
    if runtime.main:
        features = (fusion_features(inputs, recipe, frozen, manifest,
                                    cache_dir / "radiomics" if cache_dir else None)
                    if recipe.training.fusion else None)
        fusion = fusion_oof(inputs, features) if features is not None else None
        nulls = (permutation_nulls(inputs, recipe, frozen, features)
                 if recipe.training.permutations else (None, None))
        summary = write_trained_bundle(out, recipe, inputs, states, oof, histories, manifest,
                                       fusion, nulls)
        shutil.rmtree(work, ignore_errors=True)
        if fusion is not None:
            print(f"fusion (embedding + radiomics, ridge): {out / FUSION_REPORT}", file=sys.stderr)
        print_summary(summary)
    runtime.barrier()
    return summary
