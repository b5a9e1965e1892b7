"""Large cohorts: `predict --manifest` over worker processes and over ranks, merged; the
merged outputs equal a single process's. A synthetic CT cohort, an untrained `small` bundle
(preprocessed at 3 mm: small images)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from RadioGenomicsLib.bundle import make_untrained_bundle
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.cohort_workers import PART_FILE, part_name, share
from RadioGenomicsLib.model import ModelConfig
from RadioGenomicsLib.outputs import COMPLETE_MARKER
from RadioGenomicsLib.preprocess import PreprocessSettings
from RadioGenomicsLib.synth import synthesize_cohort

GENES = 25
PATIENTS = 5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(GENES)],
                          "gene_name": [f"G{i}" for i in range(GENES)]})
    genes["train_mean"], genes["train_std"] = np.linspace(1, 2, GENES), 0.3
    path = tmp_path_factory.mktemp("bundle") / "ct_small"
    return make_untrained_bundle(path, ModelConfig.preset("small"), ["ct"], genes,
                                 PreprocessSettings(max_slices=3, spacing_mm=3.0).to_dict(), seed=3, folds=2)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A synthetic CT cohort whose third patient's image is damaged."""
    folder = synthesize_cohort(tmp_path_factory.mktemp("synth") / "cohort", PATIENTS, 20, "ct",
                               seed=1, jobs=1)
    manifest = pd.read_csv(folder / "manifest.csv")
    damaged = folder / manifest.loc[2, "ct"]
    damaged.write_bytes(damaged.read_bytes()[:200])
    return folder / "manifest.csv", damaged


@pytest.fixture(scope="module")
def single(tmp_path_factory, bundle, cohort):
    """The single-process outputs, the reference for the others."""
    from RadioGenomicsLib.cli import main

    out = tmp_path_factory.mktemp("single") / "out"
    assert main(["predict", "--model", str(bundle.path), "--manifest", str(cohort[0]),
                 "--out", str(out), "--device", "cpu"]) == 0
    return out


def _same_outputs(folder, reference) -> None:
    """The same files, the same patients and genes in the same order, the same values to
    the tables' 6 significant digits (the workers' one thread sums in another order than
    two: ~1e-7 apart, which can change the last digit written; see the test below)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference.iterdir())
    ours = pd.read_csv(folder / "predictions.tsv", sep="\t", index_col=0)
    theirs = pd.read_csv(reference / "predictions.tsv", sep="\t", index_col=0)
    assert ours.index.tolist() == theirs.index.tolist()
    assert ours.columns.tolist() == theirs.columns.tolist()
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=6e-6)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "failures.tsv", sep="\t"),
                                  pd.read_csv(reference / "failures.tsv", sep="\t"))
    for table in theirs.index:
        a, b = (pd.read_csv(f / f"{table}.csv") for f in (folder, reference))
        assert a["gene_id"].tolist() == b["gene_id"].tolist()
        np.testing.assert_allclose(a["predicted"], b["predicted"], rtol=6e-6)


def test_the_single_process_reference(single, bundle, cohort):
    matrix = pd.read_csv(single / "predictions.tsv", sep="\t", index_col=0)
    assert matrix.index.tolist() == ["TCGA-S1-0001", "TCGA-S1-0002", "TCGA-S1-0004",
                                     "TCGA-S1-0005"]
    assert matrix.columns.tolist() == bundle.genes["gene_id"].tolist()
    assert not np.allclose(matrix.iloc[0], matrix.iloc[1])  # patients differ
    failures = pd.read_csv(single / "failures.tsv", sep="\t")
    assert failures["patient_id"].tolist() == ["TCGA-S1-0003"]
    assert str(cohort[1]) in failures["problem"].iat[0]


def test_two_workers_equal_one_process(tmp_path, bundle, cohort, single, run_cli):
    code, stdout, stderr = run_cli("predict", "--model", bundle.path, "--manifest", cohort[0],
                                   "--out", tmp_path / "out", "--runs", tmp_path / "runs",
                                   "--device", "cpu", "--workers", "2")
    assert code == 0, stderr
    assert "2 workers of 1 thread(s)" in stdout and "4 of 5 patients predicted" in stdout
    # the damaged file is named, once, by the patient that holds it
    assert stderr.count(f"TCGA-S1-0003: skipped: {cohort[1]}") == 1
    _same_outputs(tmp_path / "out", single)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        COMPLETE_MARKER, "TCGA-S1-0001", "TCGA-S1-0002", "TCGA-S1-0004", "TCGA-S1-0005"]


def test_worker_values_equal_in_process_values(tmp_path, bundle, cohort):
    """Before writing: the gene values from two workers equal one process's to float32's
    rounding (a worker runs one thread, this process several: the sums' order differs)."""
    from RadioGenomicsLib.cohort import validate_cohort
    from RadioGenomicsLib.cohort_workers import CohortSettings, cohort_studies, predict_patients

    studies = cohort_studies(validate_cohort(cohort[0]))[:2]
    settings = CohortSettings("cpu", "all", "torch", "float32")
    values = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        outcomes = list(predict_patients(bundle, studies, settings, out, out, workers))
        values[workers] = {o.patient: o.values for o in outcomes}
    assert sorted(values[2]) == ["TCGA-S1-0001", "TCGA-S1-0002"]
    for patient, expected in values[1].items():
        assert values[2][patient].shape == (GENES,)
        np.testing.assert_allclose(values[2][patient], expected, rtol=2e-5, atol=1e-6)


def test_a_pool_that_breaks_while_it_starts_is_the_same_one_line(bundle, cohort, tmp_path,
                                                                 monkeypatch):
    """A worker killed while the pool starts its processes breaks the submit itself: the
    same InputError (exit 2) as a worker dying later, every patient counted unpredicted."""
    from concurrent.futures.process import BrokenProcessPool

    from RadioGenomicsLib import cohort_workers
    from RadioGenomicsLib.cohort import validate_cohort

    class BreaksAtStart(cohort_workers.ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            raise BrokenProcessPool("A child process terminated abruptly")

    monkeypatch.setattr(cohort_workers, "ProcessPoolExecutor", BreaksAtStart)
    studies = cohort_workers.cohort_studies(validate_cohort(cohort[0]))[:2]
    settings = cohort_workers.CohortSettings("cpu", "all", "torch", "float32")
    with pytest.raises(InputError, match="ended abruptly .* 2 patients not predicted"):
        list(cohort_workers.predict_patients(bundle, studies, settings, tmp_path, tmp_path, 2))


def test_ranks_and_merge_equal_one_process(tmp_path, bundle, cohort, single, run_cli,
                                           monkeypatch):
    """Rank 0 as torchrun starts it (RANK, WORLD_SIZE), rank 1 by options; then the merge."""
    parts = tmp_path / "parts"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, stdout, _ = run_cli("predict", "--model", bundle.path, "--manifest", cohort[0],
                              "--out", parts, "--device", "cpu")
    assert code == 0 and "3 of 5 patients (rank 0 of 2)" in stdout
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    code, stdout, _ = run_cli("predict", "--model", bundle.path, "--manifest", cohort[0],
                              "--out", parts, "--device", "cpu", "--rank", "1", "--world-size", "2")
    assert code == 0 and "2 of 5 patients (rank 1 of 2)" in stdout
    part = json.loads((parts / part_name(1, 2) / PART_FILE).read_text())
    assert part["predicted"] == ["TCGA-S1-0002", "TCGA-S1-0004"] and part["failed"] == []
    code, stdout, stderr = run_cli("predict", "--model", bundle.path, "--out", tmp_path / "merged",
                                   "--merge", parts / part_name(0, 2), parts / part_name(1, 2))
    assert code == 0, stderr
    assert "4 of 5 patients predicted" in stdout
    _same_outputs(tmp_path / "merged", single)


def test_share_takes_every_world_size_th_patient():
    patients = [(f"P{i}", None) for i in range(7)]
    shares = [[p for p, _ in share(patients, rank, 3)] for rank in range(3)]
    assert shares == [["P0", "P3", "P6"], ["P1", "P4"], ["P2", "P5"]]


@pytest.fixture(scope="module")
def parts(tmp_path_factory, bundle, cohort):
    """The two parts of the cohort, written once for the merge's refusals."""
    from RadioGenomicsLib.cli import main

    folder = tmp_path_factory.mktemp("parts")
    for rank in (0, 1):
        assert main(["predict", "--model", str(bundle.path), "--manifest", str(cohort[0]),
                     "--out", str(folder), "--device", "cpu", "--folds", "first",
                     "--rank", str(rank), "--world-size", "2"]) == 0
    return [folder / part_name(rank, 2) for rank in (0, 1)]


def _damage_table(part):
    (part / "predictions.tsv").write_text("patient_id\tENSG1\nTCGA-S1-0002\t1.0\n")
    return part / "predictions.tsv", "its patients differ"


def _unfinished(part):
    (part / PART_FILE).unlink()
    return part, f"no {PART_FILE}"


def _lost_table(part):
    (part / "TCGA-S1-0004.csv").unlink()
    return part / "TCGA-S1-0004.csv", "missing: the part is incomplete"


@pytest.mark.parametrize("damage", [_damage_table, _unfinished, _lost_table, None])
def test_a_bad_part_is_refused_before_writing(tmp_path, parts, bundle, run_cli, damage):
    given = [tmp_path / "part0", tmp_path / "part1"]
    for source, copy in zip(parts, given):
        shutil.copytree(source, copy)
    if damage is None:  # rank 1 not given
        given, (path, problem) = given[:1], (tmp_path, "rank(s) 1 missing")
    else:
        path, problem = damage(given[1])
    code, _, stderr = run_cli("predict", "--model", bundle.path, "--out", tmp_path / "merged",
                              "--merge", *given)
    assert code == 2
    assert stderr.strip() == f"radiogenomics predict: error: {path}: {problem}" or (
        problem in stderr and str(path) in stderr and len(stderr.strip().splitlines()) == 1)
    assert not (tmp_path / "merged").exists()


def test_every_patient_failing_exits_2_without_a_table(tmp_path, bundle, cohort, run_cli):
    manifest = pd.read_csv(cohort[0]).iloc[[2, 2]]
    manifest["patient_id"] = ["TCGA-S1-0003", "TCGA-S1-0033"]
    manifest["ct"] = str(cohort[1])
    manifest["segmentation"] = [str(cohort[0].parent / s) for s in manifest["segmentation"]]
    manifest.to_csv(tmp_path / "bad.csv", index=False)
    code, stdout, stderr = run_cli("predict", "--model", bundle.path, "--manifest",
                                   tmp_path / "bad.csv", "--out", tmp_path / "out",
                                   "--device", "cpu", "--workers", "2")
    assert code == 2 and "0 of 2 patients predicted" in stdout
    assert stderr.count(str(cohort[1])) == 2
    assert not (tmp_path / "out" / "predictions.tsv").exists()
    assert (tmp_path / "out" / "failures.tsv").is_file()


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers 0: give 1 or more"),
    (["--rank", "2", "--world-size", "2"], "rank 2 of world size 2: give 0 <= R < W"),
    (["--rank", "1"], "--rank R and --world-size W go together"),
    (["--merge", "x", "--workers", "2"], "not --manifest"),
])
def test_bad_cohort_options_exit_2(tmp_path, bundle, cohort, run_cli, args, message):
    code, _, stderr = run_cli("predict", "--model", bundle.path, "--manifest", cohort[0],
                              "--out", tmp_path / "out", *args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_export_keeps_reference_studies_checksummed(tmp_path, bundle, cohort, run_cli):
    """`export --reference-manifest --references-only`: the studies' model-ready slices in
    the bundle, in its checksums and manifest; the precision check then uses them."""
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.imaging import load_study
    from RadioGenomicsLib.preprocess import preprocess
    from RadioGenomicsLib.runtime.precision import REFERENCE_FILE, reference_studies

    model = tmp_path / "bundle"
    shutil.copytree(bundle.path, model)
    manifest = pd.read_csv(cohort[0]).iloc[[0, 3]]
    for column in ("ct", "segmentation"):
        manifest[column] = [str(cohort[0].parent / p) for p in manifest[column]]
    manifest.to_csv(tmp_path / "references.csv", index=False)
    code, stdout, stderr = run_cli("export", model, "--reference-manifest",
                                   tmp_path / "references.csv", "--references-only")
    assert code == 0, stderr
    assert "2 reference studies (TCGA-S1-0001, TCGA-S1-0004; 6 slices)" in stdout
    assert not list(model.glob("*.onnx"))  # the models were not exported
    kept = load_bundle(model)  # the manifest lists the new file: still verifiable
    assert REFERENCE_FILE in kept.files
    assert json.loads((model / "manifest.json").read_text())["files"][REFERENCE_FILE] == \
        kept.files[REFERENCE_FILE]
    studies, source = reference_studies(kept, None)
    assert source.startswith(REFERENCE_FILE)
    settings = PreprocessSettings.from_dict(kept.metadata.preprocessing)
    for stored, row in zip(studies, manifest.itertuples()):
        expected = preprocess(load_study({"ct": row.ct}, row.segmentation, label=row.label),
                              settings).images
        np.testing.assert_array_equal(stored, expected)
    # a changed reference file is refused when the check reads it
    data = bytearray((model / REFERENCE_FILE).read_bytes())
    data[100] ^= 0xFF
    (model / REFERENCE_FILE).write_bytes(bytes(data))
    with pytest.raises(InputError, match="checksum mismatch"):
        reference_studies(load_bundle(model), None)


def test_export_refuses_an_unreadable_reference_before_writing(tmp_path, bundle, cohort, run_cli):
    model = tmp_path / "bundle"
    shutil.copytree(bundle.path, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    code, _, stderr = run_cli("export", model, "--reference-manifest", cohort[0])
    last = stderr.strip().splitlines()[-1]  # after the progress bar
    assert code == 2 and last.startswith(f"radiogenomics export: error: {cohort[1]}: cannot read")
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    code, _, stderr = run_cli("export", model, "--references-only")
    assert code == 2 and "--references-only needs --reference-manifest" in stderr


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_a_worker_that_dies_stops_the_run_without_a_table(tmp_path, bundle, cohort):
    """A worker killed (as by the kernel's out-of-memory killer): one line, exit 2, no
    predictions.tsv."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "RadioGenomicsLib", "predict", "--model", str(bundle.path),
               "--manifest", str(cohort[0]), "--out", str(tmp_path / "out"), "--device", "cpu",
               "--workers", "2"]
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(repo),
                                               "RADIOGENOMICS_PROGRESS": "lines"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        # the workers: the children that are not multiprocessing's resource tracker
        workers = [pid for pid in _children(process.pid)
                   if "--multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_text()]
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            break
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "a worker process ended abruptly" in errors[0]
    assert not (tmp_path / "out" / "predictions.tsv").exists()
