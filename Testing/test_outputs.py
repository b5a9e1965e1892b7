"""Outputs never destroy data: checked before any work; OS errors are one line, exit 2."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from RadioGenomicsLib.atomic import atomic_path, partial_owner
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.outputs import (COMPLETE_MARKER, Output, check_outputs, clean_partials,
                                      completed_by, mark_complete)


def one_line(code, err, *words):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def foreign_folder(path: Path) -> Path:
    path.mkdir()
    for i in range(3):
        (path / f"scan_{i}.nii.gz").write_bytes(b"precious")
    (path / "notes.txt").write_text("keep me")
    return path


def intact(path: Path) -> bool:
    return (sorted(p.name for p in path.iterdir())
            == ["notes.txt", "scan_0.nii.gz", "scan_1.nii.gz", "scan_2.nii.gz"])


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def tables(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    index = pd.Index([f"P{i}" for i in range(12)], name="patient_id")
    genes = [f"G{j}" for j in range(5)]
    paths = {}
    for name in ("pred", "truth"):
        path = tmp_path / f"{name}.tsv"
        pd.DataFrame(rng.normal(size=(12, 5)), index=index, columns=genes).to_csv(path, sep="\t")
        paths[name] = path
    return paths


def test_train_refuses_a_foreign_folder_before_any_work(run_cli, tmp_path):
    cohort = foreign_folder(tmp_path / "cohort")
    # the manifest does not even exist: the output is checked first, nothing is read
    code, _, err = run_cli("train", "--manifest", tmp_path / "none.csv", "--expression",
                           tmp_path / "none.tsv", "--out", cohort, "--config", "small")
    one_line(code, err, str(cohort), "not empty", "refusing to replace")
    assert intact(cohort)


def test_train_refuses_a_file_where_its_folder_goes(run_cli, tmp_path):
    (tmp_path / "bundle").write_text("a file")
    code, _, err = run_cli("train", "--manifest", tmp_path / "none.csv", "--expression",
                           tmp_path / "none.tsv", "--out", tmp_path / "bundle", "--config", "small")
    one_line(code, err, "is a file; a folder is expected")


def test_evaluate_refuses_a_foreign_folder_and_replaces_its_own(run_cli, tables, tmp_path):
    cohort = foreign_folder(tmp_path / "cohort")
    args = ("evaluate", "--predictions", tables["pred"], "--truth", tables["truth"])
    code, _, err = run_cli(*args, "--out", cohort)
    one_line(code, err, "not empty")
    assert intact(cohort)
    out = tmp_path / "report"
    assert run_cli(*args, "--out", out)[0] == 0
    assert completed_by(out) == "evaluate"
    (out / "stale.txt").write_text("from before")
    assert run_cli(*args, "--out", out)[0] == 0  # an earlier complete report: replaced whole
    assert not (out / "stale.txt").exists()
    mark_complete(out, "train")  # another command's output is not replaced
    code, _, err = run_cli(*args, "--out", out)
    one_line(code, err, "an output of `train`")


def test_evaluate_refuses_an_output_folder_holding_an_input(run_cli, tables, tmp_path):
    code, _, err = run_cli("evaluate", "--predictions", tables["pred"], "--truth",
                           tables["truth"], "--out", tmp_path)
    one_line(code, err, "holds the input")
    assert tables["pred"].is_file()


def test_expression_refuses_to_overwrite_its_sample_sheet(run_cli, tmp_path):
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("File ID\tFile Name\n")
    (tmp_path / "star").mkdir()
    code, _, err = run_cli("expression", "--expression", tmp_path / "star", "--sample-sheet",
                           sheet, "--out", sheet)
    one_line(code, err, "is also an input")
    assert sheet.read_text() == "File ID\tFile Name\n"


def test_preprocess_refuses_its_own_image_and_a_preview_on_the_output(run_cli, tmp_path):
    image = tmp_path / "ct.nii.gz"
    image.write_bytes(b"not read: refused before")
    base = ("preprocess", "--image", f"ct={image}", "--segmentation", tmp_path / "seg.nii.gz")
    code, _, err = run_cli(*base, "--out", image)
    one_line(code, err, "is also an input")
    assert image.read_bytes() == b"not read: refused before"
    code, _, err = run_cli(*base, "--out", tmp_path / "s.npz", "--preview", tmp_path / "s.npz")
    one_line(code, err, "name the same place")
    (tmp_path / "folder.npz").mkdir()
    code, _, err = run_cli(*base, "--out", tmp_path / "folder.npz")
    one_line(code, err, "is a folder; a file is expected")


def test_output_below_a_file_is_refused(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_outputs("preprocess", [Output(tmp_path / "plain" / "sub" / "out.npz", "file")])


def test_partials_of_dead_runs_are_cleaned_and_of_live_ones_kept(tmp_path):
    dead = tmp_path / f".genes.partial-{dead_pid()}.csv"
    dead.write_text("half")
    dead_folder = tmp_path / f".bundle.partial-{dead_pid()}"
    dead_folder.mkdir()
    (dead_folder / "fold_0.safetensors").write_bytes(b"half")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".other.partial-{sleeper.pid}.csv"
        live.write_text("being written")
        mine = tmp_path / "keep.partial-1.csv"  # not hidden: not a partial name
        mine.write_text("a user's file")
        check_outputs("predict", [Output(tmp_path / "genes.csv", "file")])
        assert not dead.exists() and not dead_folder.exists()
        assert live.exists() and mine.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert clean_partials(tmp_path) == [live]


def test_a_killed_write_leaves_a_recognisable_partial(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "table.csv") as tmp:
            tmp.write_text("half")
            assert partial_owner(tmp) == os.getpid()
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    assert partial_owner(tmp_path / ".table.partial-12.csv") == 12
    assert partial_owner(tmp_path / "table.csv") is None
    assert partial_owner(tmp_path / f"..partial-7{COMPLETE_MARKER}") == 7


def test_os_errors_are_one_line_naming_the_path(run_cli, tables, monkeypatch):
    from RadioGenomicsLib import report

    def full_disk(*_, **__):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/report/summary.json")

    monkeypatch.setattr(report, "write_report", full_disk)
    monkeypatch.setattr("RadioGenomicsLib.report.write_report", full_disk)
    code, _, err = run_cli("evaluate", "--predictions", tables["pred"], "--truth",
                           tables["truth"], "--out", tables["pred"].parent / "r")
    one_line(code, err, "/data/report/summary.json: No space left on device")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_unwritable_place_is_one_line(run_cli, tables):
    code, _, err = run_cli("evaluate", "--predictions", tables["pred"], "--truth",
                           tables["truth"], "--out", "/proc/self/radiogenomics-report")
    one_line(code, err, "/proc/self/radiogenomics-report")


def test_a_folder_holding_only_a_killed_runs_leftovers_counts_as_empty(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / f".summary.partial-{dead_pid()}.json").write_text("half")
    check_outputs("evaluate", [Output(out, "folder")])
    assert list(out.iterdir()) == []
