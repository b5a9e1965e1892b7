"""The viewer's rules on what it reads and who connects, and channels named by file name.

These parts of RadioGenomics/Web need no Slicer library; the viewer itself is tested in
a browser by Testing/slicer/test_viewer.py (`make slicer-test`).
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

from RadioGenomicsLib.cohort import channel_from_name
from RadioGenomicsLib.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "RadioGenomics"))
from Web.security import access_token, confine, extract_zip, is_loopback, save_upload  # noqa: E402
from Web.study import StudyFolder  # noqa: E402

MRI = ("t1", "t1gd", "t2", "flair")


@pytest.mark.parametrize("name, channel", [
    ("TCGA-S1-0001_t1.nii.gz", "t1"), ("TCGA-S1-0001_t1gd.nii.gz", "t1gd"),
    ("BraTS20_Training_001_t1ce.nii.gz", "t1gd"), ("TCGA-02-0006_1996.08.23_t1Gd.nii.gz", "t1gd"),
    ("sub-01_T1w.nii.gz", "t1"), ("T1_post.nrrd", "t1gd"), ("x_T2w.nrrd", "t2"),
    ("t2_flair.nii", "flair"), ("FLAIR.nrrd", "flair"),
    ("t12.nii", None), ("t1_t2.nii", None), ("TCGA-S1-0001_seg.nii.gz", None),
])
def test_channel_from_file_name(name, channel):
    assert channel_from_name(name, MRI) == channel


def test_channel_must_be_one_the_model_takes():
    assert channel_from_name("lung_CT.nrrd", ("ct",)) == "ct"
    assert channel_from_name("lung_CT.nrrd", MRI) is None
    assert channel_from_name("brain_t1.nii", ("ct",)) is None


def test_study_folder_assigns_obvious_channels_and_finds_the_segmentation(tmp_path):
    for name in ("P1_t1.nii.gz", "P1_t1ce.nii.gz", "P1_t2.nii.gz", "P1_flair.nii.gz",
                 "P1_seg.nii.gz", "notes.txt", ".hidden.nii"):
        (tmp_path / name).write_bytes(b"x")
    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "1").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    nested = tmp_path / "upload" / "CT"  # a zip's folder inside the extracted folder
    nested.mkdir(parents=True)
    (nested / "1.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    (tmp_path / "empty").mkdir()
    study = StudyFolder.scan(tmp_path)
    assert [p.name for p in study.segmentations()] == ["P1_seg.nii.gz"]
    assert {p.name for p in study.images()} == {"P1_t1.nii.gz", "P1_t1ce.nii.gz", "P1_t2.nii.gz",
                                               "P1_flair.nii.gz", "series", "CT"}
    assigned = study.assign(list(MRI))
    assert {c: Path(p).name for c, p in assigned.items()} == {
        "t1": "P1_t1.nii.gz", "t1gd": "P1_t1ce.nii.gz", "t2": "P1_t2.nii.gz",
        "flair": "P1_flair.nii.gz"}
    (tmp_path / "P1_t1_copy.nii.gz").write_bytes(b"x")  # two candidates: the user chooses
    assert StudyFolder.scan(tmp_path).assign(list(MRI))["t1"] == ""


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="holds no image"):
        StudyFolder.scan(tmp_path)


def test_loopback_needs_no_token_any_other_address_does():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("viewer.example.org")
    assert access_token("127.0.0.1", None) is None
    generated = access_token("0.0.0.0", None)
    assert len(generated) >= 32 and generated != access_token("0.0.0.0", None)
    assert access_token("0.0.0.0", "a-long-enough-secret-token") == "a-long-enough-secret-token"
    with pytest.raises(InputError, match="reachable from other machines"):
        access_token("0.0.0.0", "")


def test_typed_paths_stay_inside_the_server_folders(tmp_path):
    root = tmp_path / "studies"
    (root / "p1").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "link").symlink_to(tmp_path / "secret")
    assert confine(root / "p1", [root]) == (root / "p1").resolve()
    for escape in (root / ".." / "secret", root / "link", "/etc/passwd", "~"):
        with pytest.raises(InputError, match="outside the folders"):
            confine(escape, [root])


def test_uploads_are_limited_and_stay_in_the_session_folder(tmp_path):
    folder = tmp_path / "uploads"
    saved = save_upload("../../evil/t1.nii.gz", b"data", folder, limit_bytes=100)
    assert saved == folder / "t1.nii.gz" and saved.read_bytes() == b"data"
    with pytest.raises(InputError, match="over the upload limit"):
        save_upload("t2.nii.gz", b"x" * 101, folder, limit_bytes=100)
    with pytest.raises(InputError, match="is not one of"):
        save_upload("run.sh", b"x", folder, limit_bytes=100)
    with pytest.raises(InputError, match="not a file name"):
        save_upload(".bashrc", b"x", folder, limit_bytes=100)
    assert sorted(p.name for p in folder.iterdir()) == ["t1.nii.gz"]


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_dicom_zip_is_extracted_and_a_zip_slip_refused(tmp_path):
    folder = tmp_path / "uploads"
    series = save_upload("ct.zip", zip_bytes({"ct/1.dcm": b"a", "ct/2.dcm": b"b"}), folder, 1000)
    assert sorted(p.name for p in (series / "ct").iterdir()) == ["1.dcm", "2.dcm"]
    assert not (folder / "ct.zip").exists()
    with pytest.raises(InputError, match="would land outside its folder"):
        save_upload("evil.zip", zip_bytes({"../../outside.txt": b"x"}), folder, 1000)
    assert not (tmp_path / "outside.txt").exists()
    bomb = folder / "big.zip"
    bomb.write_bytes(zip_bytes({"a.dcm": b"\0" * 5000}))
    with pytest.raises(InputError, match="more than the upload limit"):
        extract_zip(bomb, folder / "big", 1000)


@pytest.mark.skipif(importlib.util.find_spec("trame_slicer") is not None,
                    reason="the viewer environment is installed here")
def test_viewer_without_its_environment_says_so_in_one_line(run_cli):
    code, out, err = run_cli("viewer", "--port", "0")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0
    assert "radiogenomics viewer: error: the viewer needs trame_slicer" in err
    assert "make viewer" in err


def test_sample_uses_the_demo_model_when_make_demo_has_run(tmp_path):
    """With a complete `make demo` output the sample is its model and the study it kept
    out, labelled as trained on synthetic patients (the quick sample, an untrained
    bundle, is exercised by the browser test)."""
    from RadioGenomicsLib.demo import TRAIN_PATIENTS, make_sample

    demo = tmp_path / "demo-out"
    (demo / "model").mkdir(parents=True)
    (demo / "model" / "metadata.json").write_text("{}")
    rows = [f"P{i},images/P{i}_t1.nii.gz,images/P{i}_t1gd.nii.gz,images/P{i}_t2.nii.gz,"
            f"images/P{i}_flair.nii.gz,images/P{i}_seg.nii.gz," for i in range(TRAIN_PATIENTS + 2)]
    (demo / "cohort").mkdir()
    (demo / "cohort" / "manifest.csv").write_text(
        "patient_id,t1,t1gd,t2,flair,segmentation,label\n" + "\n".join(rows) + "\n")
    sample = make_sample(tmp_path / "sample", demo)
    assert sample["bundle"] == str((demo / "model").resolve())
    assert sample["patient"] == f"P{TRAIN_PATIENTS}"  # the first patient training never saw
    unseen = demo / "cohort" / "images" / f"P{TRAIN_PATIENTS}_t1gd.nii.gz"
    assert sample["images"]["t1gd"] == str(unseen.resolve())
    assert "trained by `make demo`" in sample["label"] and "Synthetic study" in sample["label"]
    assert json.loads((tmp_path / "sample" / "sample.json").read_text()) == sample
