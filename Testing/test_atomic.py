from pathlib import Path

import pytest

from RadioGenomicsLib.atomic import atomic_path


def test_file_appears_only_when_complete(tmp_path: Path):
    target = tmp_path / "out" / "table.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == target.parent
        tmp.write_text("x")
        assert not target.exists()
    assert target.read_text() == "x"
    assert [p.name for p in target.parent.iterdir()] == ["table.nii.gz"]


def test_failure_leaves_nothing(tmp_path: Path):
    target = tmp_path / "genes.csv"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_folder_replaced_whole(tmp_path: Path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
