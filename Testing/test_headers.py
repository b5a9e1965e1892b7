"""Images checked against what their headers claim: bytes, size ceiling, spacing, DICOM slices."""

from __future__ import annotations

import gzip
import locale
import time
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.headers import MAX_VOXELS_ENV, NonFiniteCounter, check_image_file
from RadioGenomicsLib.imaging import read_image, read_volume

UID = "1.2.826.0.1.3680043.8.498.77"


def volume(path: Path, shape=(6, 7, 8), spacing=(1.0, 1.0, 1.0)) -> Path:
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape[::-1])
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith((".gz", ".nrrd")))
    return path


def refused(path, *words):
    with pytest.raises(InputError) as error:
        read_volume(path)
    text = str(error.value)
    assert str(path) in text and "\n" not in text, text
    for word in words:
        assert word in text, text
    return text


def test_a_whole_file_passes(tmp_path):
    for name in ("a.nii", "a.nii.gz", "a.nrrd", "a.mha"):
        image = read_volume(volume(tmp_path / name))
        assert image.GetSize() == (6, 7, 8)
        assert sitk.GetArrayViewFromImage(image)[-1, -1, -1] == 6 * 7 * 8 - 1


def test_truncated_nii_is_refused(tmp_path):
    path = volume(tmp_path / "cut.nii")
    path.write_bytes(path.read_bytes()[:-40])
    refused(path, "truncated", "promises")


def test_truncated_nii_gz_is_refused_whole_gzip_or_cut_stream(tmp_path):
    path = volume(tmp_path / "cut.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))  # a valid gzip of too few bytes
    refused(path, "truncated")
    whole = volume(tmp_path / "whole.nii.gz", shape=(40, 40, 40))
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) // 2])  # the stream itself cut
    refused(whole, "truncated")


def test_truncated_nrrd_raw_and_gzip_are_refused(tmp_path):
    raw = tmp_path / "cut.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 7, 6), np.float32)), str(raw),
                    useCompression=False)
    raw.write_bytes(raw.read_bytes()[:-10])
    refused(raw, "truncated")
    packed = volume(tmp_path / "cut_gz.nrrd", shape=(30, 30, 30))
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) - 200])
    refused(packed, "cut_gz.nrrd")


def test_a_small_file_claiming_a_huge_volume_is_refused_at_once(tmp_path):
    header = nibabel.Nifti1Header()
    header.set_data_shape((1200, 1200, 1200))
    header.set_data_dtype(np.int16)
    header["pixdim"][1:4] = 1.0
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * 16000)
    started = time.perf_counter()
    refused(path, "1200x1200x1200", "ceiling", MAX_VOXELS_ENV)
    assert time.perf_counter() - started < 5


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="the memory limit needs Linux")
def test_a_gzip_bomb_is_counted_in_chunks(tmp_path):
    """600 MB of zeros in a 0.6 MB .nii.gz, a few bytes short: refused as truncated while
    the checker holds no more than a few chunks (128 MiB of headroom)."""
    from Testing.limits import memory_limit

    header = nibabel.Nifti1Header()
    header.set_data_shape((1024, 1024, 600))
    header.set_data_dtype(np.uint8)
    header["pixdim"][1:4] = 1.0
    header["vox_offset"] = 352
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as packed:
        packed.write(header.binaryblock + b"\0" * 4)
        block = b"\0" * (1 << 24)
        for _ in range(37):
            packed.write(block)
    with memory_limit(128 << 20):
        with pytest.raises(InputError, match="truncated: the header promises 629,145,952 bytes"):
            check_image_file(path)


def test_the_voxel_ceiling_is_a_setting(tmp_path, monkeypatch):
    path = volume(tmp_path / "small.nii.gz")
    monkeypatch.setenv(MAX_VOXELS_ENV, "100")
    refused(path, "336 voxels", "ceiling of 100")
    monkeypatch.setenv(MAX_VOXELS_ENV, "lots")
    with pytest.raises(InputError, match="expected a voxel count"):
        check_image_file(path)
    monkeypatch.setenv(MAX_VOXELS_ENV, "1000")
    assert read_volume(path).GetSize() == (6, 7, 8)


@pytest.mark.parametrize("spacing", [0.0, float("nan"), float("inf")])
def test_nifti_spacing_must_be_positive_and_finite(tmp_path, spacing):
    image = nibabel.Nifti1Image(np.zeros((5, 6, 7), np.float32), np.eye(4))
    image.header["pixdim"][1:4] = [1.0, spacing, 1.0]
    path = tmp_path / "flat.nii.gz"
    nibabel.save(image, str(path))
    refused(path, "spacing", "positive and finite")


def test_nrrd_zero_spacing_is_refused(tmp_path):
    path = tmp_path / "flat.nrrd"
    body = np.zeros((4, 4, 4), np.uint8).tobytes()
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\n"
                     b"space: left-posterior-superior\n"
                     b"space directions: (1,0,0) (0,0,0) (0,0,1)\nencoding: raw\n\n" + body)
    refused(path, "space direction", "positive and finite")


# ---------------------------------------------------------------- DICOM series

def write_slices(folder: Path, positions: list[float], values: list[float] | None = None,
                 spacing_xy=(0.8, 0.8)) -> Path:
    """One CT slice file per position along z (axial), each plane filled with its value."""
    folder.mkdir(parents=True, exist_ok=True)
    before = locale.setlocale(locale.LC_ALL)  # GDCM's writer sets the C locale: restored below
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, z in enumerate(positions):
        value = (values or positions)[k]
        plane = sitk.GetImageFromArray(np.full((1, 12, 10), round(value * 10), np.int16))
        plane.SetSpacing((*spacing_xy, 1.0))  # the writer takes PixelSpacing from here
        plane.SetOrigin((-40.0, -50.0, z))
        tags = {"0008|0060": "CT", "0008|103e": "axial", "0020|000e": UID,
                "0020|000d": UID + ".1", "0008|0018": f"{UID}.{k + 1}",
                "0020|0013": str(k + 1), "0020|0032": f"-40.0\\-50.0\\{z:.4f}",
                "0020|0037": "1\\0\\0\\0\\1\\0",
                "0028|0030": f"{spacing_xy[1]}\\{spacing_xy[0]}",
                "0008|0020": "20260101", "0010|0020": "TEST"}
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(plane)
    locale.setlocale(locale.LC_ALL, before)
    return folder


def test_an_even_series_reads_as_it_is(tmp_path):
    image = read_image(write_slices(tmp_path / "s", [0.0, 2.5, 5.0, 7.5, 10.0]))
    assert image.GetSize() == (10, 12, 5)
    np.testing.assert_allclose(image.GetSpacing(), (0.8, 0.8, 2.5), atol=1e-4)


def test_a_missing_slice_is_refused_naming_series_and_position(tmp_path):
    folder = write_slices(tmp_path / "gap", [0.0, 2.5, 5.0, 10.0, 12.5])
    with pytest.raises(InputError) as error:
        read_image(folder)
    text = str(error.value)
    assert UID in text and "1 slice(s) missing between positions 5.00 and 10.00 mm" in text
    assert "--regularize-dicom" in text and "\n" not in text


def test_duplicate_and_mixed_spacing_are_refused(tmp_path):
    with pytest.raises(InputError, match="two slices at position 2.50 mm"):
        read_image(write_slices(tmp_path / "dup", [0.0, 2.5, 2.5, 5.0, 7.5]))
    with pytest.raises(InputError, match="uneven slice spacing: 1.5 mm between positions 5.00"):
        read_image(write_slices(tmp_path / "mixed", [0.0, 2.5, 5.0, 6.5, 9.0, 11.5]))


def test_regularisation_resamples_onto_a_uniform_grid_and_says_so(tmp_path, capsys):
    # plane value = its z: linear interpolation between slices must give z again
    folder = write_slices(tmp_path / "gap", [0.0, 2.5, 5.0, 10.0, 12.5, 12.5],
                          values=[0.0, 2.5, 5.0, 10.0, 12.0, 13.0])
    image = read_image(folder, regularize=True)
    assert image.GetSize() == (10, 12, 6)
    np.testing.assert_allclose(image.GetSpacing(), (0.8, 0.8, 2.5), atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), (-40.0, -50.0, 0.0), atol=1e-4)
    planes = sitk.GetArrayViewFromImage(image)[:, 0, 0] / 10
    np.testing.assert_allclose(planes, [0.0, 2.5, 5.0, 7.5, 10.0, 12.5], atol=1e-3)
    assert "regularised onto 6 slices 2.5 mm apart" in capsys.readouterr().err


def test_regularisation_by_setting(tmp_path, monkeypatch):
    folder = write_slices(tmp_path / "gap", [0.0, 2.5, 5.0, 10.0])
    monkeypatch.setenv("RADIOGENOMICS_REGULARIZE_DICOM", "1")
    assert read_image(folder).GetDepth() == 5


def test_a_truncated_dicom_slice_is_refused(tmp_path):
    folder = write_slices(tmp_path / "cut", [0.0, 2.5, 5.0])
    victim = folder / "slice_001.dcm"
    victim.write_bytes(victim.read_bytes()[:-60])
    with pytest.raises(InputError, match="slice_001.dcm: truncated"):
        read_image(folder)


def test_preprocess_cli_flag_regularises(tmp_path, run_cli):
    folder = write_slices(tmp_path / "gap", [0.0, 2.5, 5.0, 10.0])
    code, _, err = run_cli("preprocess", "--image", f"ct={folder}", "--segmentation",
                           tmp_path / "none.nii.gz", "--out", tmp_path / "s.npz")
    assert code == 2 and "missing between positions" in err
    code, _, err = run_cli("preprocess", "--image", f"ct={folder}", "--segmentation",
                           tmp_path / "none.nii.gz", "--out", tmp_path / "s.npz",
                           "--regularize-dicom")
    # the series now reads (reported); the missing segmentation is what stops it
    assert code == 2 and "regularised onto" in err and "none.nii.gz" in err


def test_non_finite_voxels_are_counted_across_chunks():
    """NaN/Inf found wherever the chunks of a stream cut the values, after the offset."""
    values = np.arange(1000, dtype=">f8")
    values[[0, 7, 500, 999]] = [np.nan, np.inf, -np.inf, np.nan]
    data = b"\x00" * 13 + values.tobytes() + b"\xff" * 40  # header, voxels, trailing bytes
    counter = NonFiniteCounter(values.dtype, 13, 13 + values.nbytes)
    cuts = [0, 5, 13, 14, 100, 3333, 3334, 7000, len(data)]
    for start, end in zip(cuts, cuts[1:]):
        counter(data[start:end])
    assert counter.count == 4


@pytest.mark.parametrize("name, dtype", [("image.nii", "<f4"), ("image.nii.gz", ">f8"),
                                         ("image.nii.gz", "<i2")])
def test_nifti_check_counts_what_itk_would_hide(tmp_path, name, dtype):
    array = np.zeros((6, 5, 4), dtype)
    if array.dtype.kind == "f":
        array[1, 2, 3], array[5, 4, 0] = np.nan, np.inf
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), str(tmp_path / name))
    assert check_image_file(tmp_path / name) == (2 if array.dtype.kind == "f" else 0)
