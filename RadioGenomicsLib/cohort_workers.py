"""A cohort's prediction: every patient of a manifest through `run.predict_study`, in this
process, over worker processes on this machine, or over the ranks of a launcher.

A process (this one, or each worker) loads the bundle once, settles its fold models on
its first patient and keeps them for the rest (`PatientPredictor`); each patient's gene
table goes to OUT/PATIENT.csv and its run to RUNS/PATIENT. The runtime and precision are
settled once before the work (`settle`, on the manifest's first readable study when the
precision check needs one), so that every worker and every rank runs the same models and
the merged table equals a single process's.

Ranks (torchrun's RANK and WORLD_SIZE, or --rank/--world-size): rank R of W predicts the
patients i of the manifest with i % W == R into OUT/rank-R-of-W/, closed by `part.json`;
`merge_parts` checks that the parts are all the ranks of one manifest, bundle and setting
and assembles them into the cohort outputs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.errors import InputError, read_json_object
from RadioGenomicsLib.hashing import sha256_of
from RadioGenomicsLib.run import StudyInputs

PREDICTIONS_FILE = "predictions.tsv"
FAILURES_FILE = "failures.tsv"
PART_FILE = "part.json"
PART_FORMAT = "radiogenomics-cohort-part"
PART_VERSION = 1
PART_KEYS = ("rank", "world_size", "manifest", "patients", "predicted", "failed", "bundle",
             "settings")
# the libraries' own thread pools, read when a worker starts them
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "RADIOGENOMICS_THREADS")
# the workers show no progress of their own (the parent counts the patients); tqdm reads
# TQDM_DISABLE when imported
QUIET = {"TQDM_DISABLE": "1", "RADIOGENOMICS_PROGRESS": "off"}

Study = tuple[str, StudyInputs]  # patient id, its files


@dataclass(frozen=True)
class CohortSettings:
    device: str = "auto"
    folds: str = "all"
    runtime: str = "auto"
    precision: str = "auto"


@dataclass(frozen=True)
class Outcome:
    """One patient: its gene values in the bundle's gene order, or why it was skipped."""

    patient: str
    values: np.ndarray | None
    problem: str | None = None


def cohort_studies(cohort: pd.DataFrame) -> list[Study]:
    """A checked manifest (`cohort.validate_cohort`) -> (patient, inputs) in its order."""
    from RadioGenomicsLib.cohort import LABEL_COLUMN, channel_columns

    channels = channel_columns(cohort.reset_index())
    studies = []
    for patient, row in cohort.iterrows():
        label = row.get(LABEL_COLUMN)
        studies.append((str(patient), StudyInputs(
            {c: row[c] for c in channels}, row["segmentation"],
            label=None if pd.isna(label) else int(label))))
    return studies


def share(studies: Sequence[Study], rank: int, world_size: int) -> list[Study]:
    """Rank `rank`'s patients: those at positions i with i % world_size == rank."""
    return list(studies[rank::world_size])


def part_name(rank: int, world_size: int) -> str:
    return f"rank-{rank}-of-{world_size}"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_worker(workers: int, ranks_here: int = 1) -> int:
    """The machine's cores split between the workers (of every rank on this machine), so
    that they do not oversubscribe it."""
    return max(1, cores() // (workers * ranks_here))


def _limit_threads(threads: int, runtime: str) -> None:
    """This process's runtimes to `threads` (the fold models are made after this)."""
    os.environ["RADIOGENOMICS_THREADS"] = str(threads)
    if runtime == "torch":
        import torch

        torch.set_num_threads(threads)


# ------------------------------------------------------------------ settling the models


def _first_study_slices(bundle, studies: Sequence[Study]) -> np.ndarray | None:
    """The model-ready slices of the first study that reads: what a single process would
    check a reduced precision on (the first study it predicts)."""
    from RadioGenomicsLib.predict import check_bundle_fits
    from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess

    settings = PreprocessSettings.from_dict(bundle.metadata.preprocessing)
    for _, inputs in studies:
        try:
            slices = preprocess(inputs.load(bundle.channels), settings)
            check_bundle_fits(bundle, slices)
            return slices.images
        except InputError:
            continue
    return None


def settle(bundle, studies: Sequence[Study], settings: CohortSettings) -> CohortSettings:
    """The runtime and precision every process of the cohort uses, chosen once."""
    from RadioGenomicsLib.runtime import REDUCED, cpu_has_bf16, pick_precision, pick_runtime
    from RadioGenomicsLib.runtime.precision import REFERENCE_FILE

    runtime = pick_runtime(bundle, settings.runtime, settings.device, settings.folds)
    images = None
    if (settings.precision != "float32" and REDUCED.get(runtime) and cpu_has_bf16()
            and REFERENCE_FILE not in bundle.files):
        images = _first_study_slices(bundle, studies)
        if images is None:  # no study reads: every patient is skipped anyway
            return replace(settings, runtime=runtime, precision="float32")
    precision = pick_precision(bundle, runtime, settings.precision, settings.folds, images)
    return replace(settings, runtime=runtime, precision=precision)


class PatientPredictor:
    """One process's share of a cohort: the fold models settled by its first patient and
    kept loaded for the others (as a single process's cohort always did)."""

    def __init__(self, bundle, settings: CohortSettings, out: Path, runs: Path):
        self.bundle, self.settings, self.out, self.runs = bundle, settings, Path(out), Path(runs)
        self.runners = None
        self.gene_ids = bundle.genes["gene_id"].tolist()

    def __call__(self, patient: str, inputs: StudyInputs) -> Outcome:
        from RadioGenomicsLib.predict import write_table
        from RadioGenomicsLib.run import TABLE_FILE, predict_study, settled_runners

        s = self.settings
        try:
            result = predict_study(self.bundle, inputs, self.runs / patient, s.device, s.folds,
                                   self.runners, s.runtime, s.precision)
        except InputError as error:
            return Outcome(patient, None, str(error))
        if self.runners is None:
            self.runners = settled_runners(self.bundle, result, s.device)
            chosen = result.info["settings"]
            self.settings = replace(s, runtime=chosen["runtime"], precision=chosen["precision"])
        write_table(result.table, self.out / f"{patient}.csv",
                    written=self.runs / patient / TABLE_FILE)
        values = result.table.set_index("gene_id")["predicted"].loc[self.gene_ids]
        return Outcome(patient, values.to_numpy(dtype=np.float64))


# ------------------------------------------------------------------ worker processes

_worker: PatientPredictor | None = None


def _start_worker(bundle_path: str, settings: CohortSettings, out: str, runs: str,
                  threads: int) -> None:
    """In each worker: its share of the cores, the bundle loaded once (the parent has
    verified it)."""
    global _worker
    _limit_threads(threads, settings.runtime)
    from RadioGenomicsLib.bundle import load_bundle

    _worker = PatientPredictor(load_bundle(bundle_path, verify_checksums=False), settings,
                               Path(out), Path(runs))


def _predict_in_worker(patient: str, inputs: StudyInputs) -> Outcome:
    assert _worker is not None, "the worker was not started"
    return _worker(patient, inputs)


@contextmanager
def _worker_environment(threads: int) -> Iterator[None]:
    """The workers' environment (thread limits, quiet) while they start: spawned, they
    take this process's."""
    values = {**{name: str(threads) for name in THREAD_VARIABLES}, **QUIET}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def predict_patients(bundle, studies: Sequence[Study], settings: CohortSettings, out: Path,
                     runs: Path, workers: int = 1, ranks_here: int = 1) -> Iterator[Outcome]:
    """Each patient's Outcome as it finishes: in this process (workers 1), else over
    `workers` processes (spawned: no torch or OpenVINO state is forked). `ranks_here`:
    the launcher's processes on this machine (torchrun's LOCAL_WORLD_SIZE), which share
    its cores too."""
    if workers <= 1 or len(studies) <= 1:
        if ranks_here > 1:
            _limit_threads(threads_per_worker(1, ranks_here), settings.runtime)
        predictor = PatientPredictor(bundle, settings, out, runs)
        for patient, inputs in studies:
            yield predictor(patient, inputs)
        return
    workers = min(workers, len(studies))
    threads = threads_per_worker(workers, ranks_here)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(
        str(bundle.path), settings, str(out), str(runs), threads))
    futures = []
    try:
        with _worker_environment(threads):  # the workers start at the first submits
            futures = [pool.submit(_predict_in_worker, patient, inputs)
                       for patient, inputs in studies]
        for future in as_completed(futures):
            yield future.result()
    # a worker killed while the pool starts breaks a submit (or the pipe that hands the
    # new process its start-up data); later, every unfinished patient's future says so
    except (BrokenProcessPool, BrokenPipeError):
        predicted = sum(f.done() and not f.cancelled() and f.exception() is None
                        for f in futures)
        raise InputError(None, f"a worker process ended abruptly (killed, out of memory?): "
                               f"{len(studies) - predicted} patients not predicted, no "
                               f"{PREDICTIONS_FILE} written; try fewer --workers") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------ the cohort outputs


def write_cohort_tables(out: Path, gene_ids: Sequence[str], outcomes: Sequence[Outcome]) -> None:
    """predictions.tsv (patients x genes, in `outcomes`' order) and failures.tsv, each
    atomic; absent when empty."""
    from RadioGenomicsLib.expression import write_values

    predicted = [o for o in outcomes if o.values is not None]
    failed = [(o.patient, o.problem) for o in outcomes if o.values is None]
    if predicted:
        matrix = pd.DataFrame(np.stack([o.values for o in predicted]),
                              index=[o.patient for o in predicted], columns=list(gene_ids))
        with atomic_path(out / PREDICTIONS_FILE) as tmp:
            write_values(tmp, matrix, digits=6)
    if failed:
        with atomic_path(out / FAILURES_FILE) as tmp:
            pd.DataFrame(failed, columns=["patient_id", "problem"]).to_csv(tmp, sep="\t",
                                                                            index=False)


def write_part(out: Path, *, rank: int, world_size: int, manifest: str | os.PathLike,
               studies: Sequence[Study], outcomes: Sequence[Outcome], bundle,
               settings: CohortSettings) -> None:
    """part.json, last: what `merge_parts` checks the parts against each other with."""
    document = {
        "format": PART_FORMAT, "format_version": PART_VERSION, "rank": rank,
        "world_size": world_size,
        "manifest": {"path": str(Path(manifest).resolve()), "sha256": sha256_of(Path(manifest))},
        "patients": [patient for patient, _ in studies],
        "predicted": [o.patient for o in outcomes if o.values is not None],
        "failed": [[o.patient, o.problem] for o in outcomes if o.values is None],
        "bundle": {"path": str(bundle.path.resolve()), "fingerprint": bundle.fingerprint},
        "settings": asdict(settings),
    }
    with atomic_path(out / PART_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _read_part(folder: Path) -> dict:
    if not (folder / PART_FILE).is_file():
        raise InputError(folder, f"not a part of a cohort prediction: no {PART_FILE} (written "
                                 "last by `predict --manifest` with --rank/--world-size or "
                                 "under torchrun; the rank did not finish?)")
    part = read_json_object(folder / PART_FILE)
    if part.get("format") != PART_FORMAT or part.get("format_version") != PART_VERSION:
        raise InputError(folder / PART_FILE, f"not a cohort part of format {PART_VERSION}")
    missing = [key for key in PART_KEYS if key not in part]
    if missing:
        raise InputError(folder / PART_FILE, f"incomplete: no {', '.join(missing)}")
    return part


def _part_values(folder: Path, part: dict, gene_ids: list[str]) -> pd.DataFrame:
    """A part's predictions.tsv, checked to hold its predicted patients and the genes."""
    path = folder / PREDICTIONS_FILE
    if not part["predicted"]:
        return pd.DataFrame(columns=gene_ids, dtype=np.float64)
    try:
        matrix = pd.read_csv(path, sep="\t", index_col=0, dtype={"patient_id": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise InputError(path, f"unreadable part table ({str(error).splitlines()[0][:160]})") from None
    if matrix.index.tolist() != part["predicted"]:
        raise InputError(path, f"its patients differ from those {PART_FILE} says were predicted")
    if matrix.columns.tolist() != gene_ids:
        raise InputError(path, "its genes differ from the bundle's")
    if not np.issubdtype(matrix.to_numpy().dtype, np.floating) or matrix.isna().any().any():
        raise InputError(path, "holds values that are not numbers")
    for patient in part["predicted"]:
        if not (folder / f"{patient}.csv").is_file():
            raise InputError(folder / f"{patient}.csv", "missing: the part is incomplete")
    return matrix


def merge_parts(bundle, folders: Sequence[str | os.PathLike], out: Path) -> list[Outcome]:
    """The parts of every rank -> the cohort outputs in `out` (the patients' gene tables,
    predictions.tsv, failures.tsv), as one process would have written them. Every part is
    read and checked before anything is written."""
    from RadioGenomicsLib.predict import ensure_writable_folder

    folders = [Path(f) for f in folders]
    parts = [_read_part(f) for f in folders]
    first, gene_ids = parts[0], bundle.genes["gene_id"].tolist()
    for folder, part in zip(folders, parts):
        if part["bundle"]["fingerprint"] != bundle.fingerprint:
            raise InputError(folder / PART_FILE, f"was predicted with another bundle than "
                                                 f"{bundle.path}")
        for key in ("manifest", "world_size", "patients", "settings"):
            if part[key] != first[key]:
                raise InputError(folder / PART_FILE, f"its {key} differ from those of "
                                                     f"{folders[0] / PART_FILE}: not parts of one run")
    world = int(first["world_size"])
    ranks = sorted(int(p["rank"]) for p in parts)
    if ranks != list(range(world)):
        missing = sorted(set(range(world)) - set(ranks))
        problem = (f"rank(s) {', '.join(map(str, missing))} missing" if missing
                   else "a rank given twice")
        raise InputError(folders[0].parent, f"{problem}: give the {world} parts of ranks 0 to "
                                            f"{world - 1} once each")
    values = {}
    problems = {}
    source = {}
    for folder, part in zip(folders, parts):
        assigned = first["patients"][int(part["rank"])::world]
        if sorted(part["predicted"] + [p for p, _ in part["failed"]]) != sorted(assigned):
            raise InputError(folder / PART_FILE, "its predicted and failed patients are not "
                                                 "its share of the manifest")
        matrix = _part_values(folder, part, gene_ids)
        values.update({p: row for p, row in zip(matrix.index, matrix.to_numpy(np.float64))})
        problems.update({p: problem for p, problem in part["failed"]})
        source.update({p: folder for p in part["predicted"]})
    outcomes = [Outcome(p, values.get(p), problems.get(p)) for p in first["patients"]]
    out = ensure_writable_folder(out)
    for patient, folder in source.items():
        with atomic_path(out / f"{patient}.csv") as tmp:
            shutil.copyfile(folder / f"{patient}.csv", tmp)
    write_cohort_tables(out, gene_ids, outcomes)
    return outcomes
