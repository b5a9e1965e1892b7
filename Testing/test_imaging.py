"""Reading studies: DICOM, NIfTI, NRRD, labelmaps, .seg.nrrd; geometry and bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import (load_study, order_channels, read_image,
                                      read_segmentation, read_volume, same_grid)


def write_dicom_series(image: sitk.Image, folder: Path, description: str, uid: str) -> None:
    """A CT volume as one DICOM file per slice, geometry in the standard tags."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                   direction[1], direction[4], direction[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT", "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|103e": description, "0020|000e": uid, "0020|000d": uid + ".1",
            "0008|0018": f"{uid}.{k + 1}", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": orientation,
            "0028|0030": "\\".join(f"{v:.6f}" for v in image.GetSpacing()[1::-1]),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0008|0020": time.strftime("%Y%m%d"), "0010|0020": "TEST",
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{description}_{k:03d}.dcm"))
        writer.Execute(plane)


@pytest.fixture(scope="module")
def ct_chest(slicerio_data) -> Path:
    return slicerio_data / "CTChest4.nrrd"


def test_dicom_round_trip_keeps_geometry(tmp_path, ct_chest):
    original = read_image(ct_chest)
    write_dicom_series(original, tmp_path / "series", "chest", "1.2.826.0.1.3680043.8.498.1")
    back = read_image(tmp_path / "series")
    assert back.GetSize() == original.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), original.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(back.GetSpacing(), original.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(back.GetDirection(), original.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back),
                                  sitk.GetArrayViewFromImage(original))


def test_dicom_folder_with_two_series_needs_a_choice(tmp_path, ct_chest):
    original = read_image(ct_chest)
    folder = tmp_path / "study"
    write_dicom_series(original, folder, "chest", "1.2.826.0.1.3680043.8.498.1")
    flipped = sitk.Flip(original, [False, False, True])
    write_dicom_series(flipped[:, :, :20], folder, "scout", "1.2.826.0.1.3680043.8.498.2")
    with pytest.raises(InputError, match=r"holds 2 series.*chest.*scout|holds 2 series.*scout.*chest"):
        read_image(folder)
    assert read_image(folder, series="scout").GetDepth() == 20
    assert read_image(folder, series="1.2.826.0.1.3680043.8.498.1").GetDepth() == 34
    with pytest.raises(InputError, match="no series 'abdomen'"):
        read_image(folder, series="abdomen")


def test_nifti_and_nrrd_agree_in_lps(tmp_path, ct_chest):
    original = read_image(ct_chest)  # NRRD, space left-posterior-superior
    sitk.WriteImage(original, str(tmp_path / "ct.nii.gz"))
    nifti = read_image(tmp_path / "ct.nii.gz")  # NIfTI stores RAS; ITK gives LPS back
    assert same_grid(nifti, original)
    corner = original.TransformIndexToPhysicalPoint((0, 0, 0))
    assert corner == pytest.approx(nifti.TransformIndexToPhysicalPoint((0, 0, 0)), abs=1e-4)


def test_seg_nrrd_segment_lands_on_the_right_side(slicerio_data, ct_chest):
    ct = read_volume(ct_chest)
    seg = slicerio_data / "Segmentation.seg.nrrd"
    right = read_segmentation(seg, ct, segment="right lung")
    left = read_segmentation(seg, ct, segment="left lung")
    hu = sitk.GetArrayViewFromImage(ct)
    for mask, sign in ((right, -1), (left, +1)):
        voxels = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)  # (z, y, x)
        centre = ct.TransformContinuousIndexToPhysicalPoint(voxels.mean(axis=0)[::-1].tolist())
        assert np.sign(centre[0]) == sign  # LPS: +x is the patient's left
        assert hu[tuple(voxels.T)].mean() < -500  # lung is air-filled
    with pytest.raises(InputError, match="no segment named 'liver'.*right lung"):
        read_segmentation(seg, ct, segment="liver")


def test_labelmap_label_choice(testdata):
    image = read_volume(testdata / "pyradiomics" / "brain1_image.nrrd")
    label_path = testdata / "pyradiomics" / "brain1_label.nrrd"
    any_label = read_segmentation(label_path, image)
    assert sitk.GetArrayViewFromImage(any_label).sum() > 1000
    assert same_grid(any_label, image)
    with pytest.raises(InputError, match=r"label 7 is not in the segmentation \(labels present: 1"):
        read_segmentation(label_path, image, label=7)


def test_channels_resampled_onto_first_grid(tmp_path, testdata):
    brain = testdata / "pyradiomics" / "brain1_image.nrrd"
    image = read_volume(brain)
    coarse = sitk.Resample(image, [s // 2 for s in image.GetSize()], sitk.Transform(),
                           sitk.sitkLinear, image.GetOrigin(),
                           [2 * s for s in image.GetSpacing()], image.GetDirection())
    sitk.WriteImage(coarse, str(tmp_path / "flair.nii.gz"))
    study = load_study({"flair": tmp_path / "flair.nii.gz", "t1gd": brain},
                       testdata / "pyradiomics" / "brain1_label.nrrd")
    assert tuple(study.channels) == ("t1gd", "flair")  # model order, not command order
    assert all(same_grid(volume, image) for volume in study.channels.values())
    assert same_grid(study.tumour, image)


def test_channel_order_and_missing_channel():
    assert order_channels(["flair", "t1", "t2", "t1gd"]) == ("t1", "t1gd", "t2", "flair")
    with pytest.raises(InputError, match="channel 't2' is missing for the model"):
        order_channels(["t1", "t1gd", "flair"], required=("t1", "t1gd", "t2", "flair"))
    with pytest.raises(InputError, match="unknown channel 'pd'"):
        order_channels(["pd"])


def _image(array: np.ndarray, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    return image


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or folder"),
    ("empty_folder", "folder holds no DICOM series"),
    ("not_an_image", "cannot read as an image"),
    ("nan", "voxels are NaN or infinite"),
    ("nan_nrrd", "voxels are NaN or infinite"),
    ("two_d", "is not a 3-D volume"),
])
def test_bad_images(tmp_path, case, message):
    path = tmp_path / "image.nii.gz"
    if case == "empty_folder":
        path = tmp_path / "dicom"
        path.mkdir()
        (path / "notes.txt").write_text("no images here")
    elif case == "not_an_image":
        path.write_bytes(b"this is not a NIfTI file at all" * 10)
    elif case.startswith("nan"):
        array = np.zeros((4, 5, 6), np.float32)
        array[1, 2, 3] = np.nan
        array[0, 0, 0] = np.inf
        path = path.with_name("image.nrrd") if case == "nan_nrrd" else path
        sitk.WriteImage(_image(array), str(path))
    elif case == "two_d":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.float32)), str(path))
    with pytest.raises(InputError) as error:
        read_volume(path)
    assert (message == "voxels are NaN or infinite") <= ("2 voxels" in str(error.value))
    assert message in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_segmentations(tmp_path):
    image = _image(np.zeros((10, 10, 10), np.float32))
    empty = tmp_path / "empty.nii.gz"
    sitk.WriteImage(_image(np.zeros((10, 10, 10), np.uint8)), str(empty))
    with pytest.raises(InputError, match="empty.nii.gz: the segmentation is empty"):
        read_segmentation(empty, image)
    far = tmp_path / "far.nii.gz"
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[4:6, 4:6, 4:6] = 1
    sitk.WriteImage(_image(labels, origin=(500.0, 0.0, 0.0)), str(far))
    with pytest.raises(InputError, match="far.nii.gz: does not overlap the reference image"):
        read_segmentation(far, image)
    edge = tmp_path / "edge.nii.gz"
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:, :, 9] = 1  # only its last column of voxels overlaps... none after the shift
    sitk.WriteImage(_image(labels, origin=(9.6, 0.0, 0.0)), str(edge))
    with pytest.raises(InputError, match="lies outside the image"):
        read_segmentation(edge, image)
