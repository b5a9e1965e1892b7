"""Preprocessing real studies into tumour slices: spacing, intensities, choice, geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from RadioGenomicsLib import masks
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import load_study, read_volume, resample_isotropic
from RadioGenomicsLib.preprocess import (MAX_AXIS_RATIO, PreprocessSettings, Slices,
                                         geometry_names, mask_channel_names, preprocess,
                                         tumour_shape, zscore)


@pytest.fixture(scope="module")
def lung(lung_study):
    return lung_study, preprocess(lung_study)


@pytest.fixture(scope="module")
def brain(testdata):
    data = testdata / "pyradiomics"
    study = load_study({"t1gd": data / "brain1_image.nrrd"}, data / "brain1_label.nrrd")
    return study, preprocess(study, PreprocessSettings(max_slices=12))


def _rewritten(tmp_path, saved, name, drop, settings=None):
    """A copy of the slices file `saved` without meta[`drop`] [and with other settings],
    as a preprocess from before that value existed wrote it."""
    with np.load(saved) as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["meta"]))
    del meta[drop]
    if settings is not None:
        meta["settings"] = settings
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(tmp_path / name, **arrays)
    return tmp_path / name


def test_ct_slices_shape_and_choice(lung):
    study, slices = lung
    settings = PreprocessSettings()
    count = len(slices.images)
    assert slices.images.shape == (count, 1, 224, 224) and slices.images.dtype == np.float32
    assert 0 < count <= settings.max_slices
    assert slices.tumour.shape == (count, 224, 224)
    assert all(mask.any() for mask in slices.tumour)  # every chosen slice holds tumour
    assert np.all(np.diff(slices.tumour_area_mm2) <= 0)  # largest first
    assert slices.tumour_area_mm2.min() >= settings.min_tumour_area_mm2
    assert slices.thickness_mm == pytest.approx(1.0)
    assert slices.region.startswith("body")



def test_ct_windows_are_channels_after_the_image(lung_study, brain):
    """A (centre, width) HU window maps its range onto -1..1 and clips the rest; MRI is
    refused with one line naming the study."""
    settings = PreprocessSettings(zscore=False, max_slices=4, ct_windows=((40, 100), (-600, 1600)))
    slices = preprocess(lung_study, settings)
    assert slices.images.shape[1] == 3
    assert mask_channel_names(settings.to_dict()) == ["CT window 40/100", "CT window -600/1600"]
    hu, narrow, wide = slices.images[:, 0], slices.images[:, 1], slices.images[:, 2]
    assert narrow.min() >= -1 and narrow.max() <= 1 and (narrow == 1).any() and (narrow == -1).any()
    inside = (hu > 0) & (hu < 80)  # no clipping within the interpolation's reach
    assert inside.sum() > 1000
    assert np.median(np.abs(narrow[inside] - ((hu[inside] + 10) / 50 - 1))) < 1e-4
    assert np.median(np.abs(wide - np.clip((hu + 1400) / 800 - 1, -1, 1))) < 1e-4
    assert "ct_windows" not in PreprocessSettings().to_dict()  # earlier cache keys stay
    assert settings.to_dict()["ct_windows"] == [[40, 100], [-600, 1600]]
    assert PreprocessSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(InputError, match="reads CT windows.*not a CT"):
        preprocess(brain[0], PreprocessSettings(ct_windows=((40, 100),)))
    with pytest.raises(InputError, match="width must be positive"):
        PreprocessSettings(ct_windows=((40, 0),))

def test_slice_geometry_is_a_square_around_the_tumour(lung):
    _, slices = lung
    settings = PreprocessSettings()
    for affine, mask in zip(slices.pixel_to_lps, slices.tumour):
        columns = affine[:3, :3]
        pixel = np.linalg.norm(columns[:, 0])
        assert np.linalg.norm(columns[:, 1]) == pytest.approx(pixel)
        assert np.linalg.norm(columns[:, 2]) == pytest.approx(1.0)  # 1 mm slab
        assert columns[:, 0] @ columns[:, 1] == pytest.approx(0.0, abs=1e-9)
        assert pixel * 224 >= settings.min_crop_mm - 1e-6
        rows, cols = np.nonzero(mask)  # the tumour sits inside, away from the edges
        assert rows.min() > 0 and cols.min() > 0 and rows.max() < 223 and cols.max() < 223


def test_zscore_inside_the_body(testdata):
    ct = resample_isotropic(read_volume(testdata / "pyradiomics" / "lung1_image.nrrd"), 1.0,
                            sitk.sitkLinear)
    body = masks.body_mask(ct)
    normalised = sitk.GetArrayFromImage(zscore(ct, body))
    inside = sitk.GetArrayViewFromImage(body) > 0
    assert ct.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert 0.1 < inside.mean() < 0.9
    assert normalised[inside].mean() == pytest.approx(0.0, abs=1e-3)
    assert normalised[inside].std() == pytest.approx(1.0, abs=1e-3)
    assert not normalised[~inside].any()


def test_tumour_pixels_land_on_tumour_voxels(brain):
    """Carry every tumour pixel of every slice to LPS and look it up in the original mask."""
    study, slices = brain
    tumour = study.tumour
    labels = sitk.GetArrayViewFromImage(tumour)
    hits = total = 0
    for index, mask in enumerate(slices.tumour):
        rows, cols = np.nonzero(mask)
        for row, col in zip(rows[::7], cols[::7]):
            point = slices.to_lps(index, col, row)
            voxel = tumour.TransformPhysicalPointToIndex(point.tolist())
            hits += labels[voxel[::-1]] > 0
            total += 1
    assert total > 200
    assert hits / total > 0.97  # only boundary pixels may disagree


def test_point_to_slice_and_back_within_half_a_voxel(brain):
    study, slices = brain
    for index in range(len(slices.images)):
        # pixel -> LPS -> pixel is exact
        column, row = 101.25, 57.5
        back = slices.from_lps(index, slices.to_lps(index, column, row))
        np.testing.assert_allclose(back, [column, row, 0.0], atol=1e-9)
    # a tumour voxel of the original grid, into the slice whose slab holds it, and back
    tumour = study.tumour
    voxels = np.argwhere(sitk.GetArrayViewFromImage(tumour) > 0)[::97]
    carried = 0
    for z, y, x in voxels:
        point = np.array(tumour.TransformIndexToPhysicalPoint((int(x), int(y), int(z))))
        for index in range(len(slices.images)):
            column, row, offset = slices.from_lps(index, point)
            if abs(offset) <= 0.5 and 0 <= column < 224 and 0 <= row < 224:
                landed = slices.to_lps(index, column, row)
                assert np.linalg.norm(landed - point) <= 0.5 * slices.thickness_mm + 1e-9
                carried += 1
    assert carried > 0


def test_brain_mri_is_skull_stripped_and_normalised(brain):
    _, slices = brain
    assert slices.region == "brain (skull stripped)"
    inside = slices.images[:, 0][slices.tumour > 0]
    assert inside.mean() > 0.5  # enhancing tumour is brighter than the average brain


def test_skull_stripping_matches_bet_on_colin27(testdata):
    head = read_volume(testdata / "mricron" / "ch2.nii.gz")
    reference = sitk.ReadImage(str(testdata / "mricron" / "ch2bet.nii.gz")) > 0
    assert not masks.is_skull_stripped(head)
    brain = masks.strip_skull(head)
    assert masks.dice(brain, reference) >= 0.90
    stripped = sitk.Mask(head, sitk.Cast(reference, sitk.sitkUInt8))
    assert masks.is_skull_stripped(stripped)


def test_distance_map_erosion_is_itks_ball_erosion():
    """The skull stripper's erosions from one distance map give ITK's voxels exactly, at
    the image border too (outside counts as inside)."""
    rng = np.random.default_rng(3)
    blobs = sitk.GetImageFromArray((rng.random((30, 34, 38)) > 0.35).astype(np.uint8))
    mask = sitk.BinaryMorphologicalClosing(blobs, [2, 2, 2], sitk.sitkBall)
    distance = masks._squared_distance_inside(mask)
    for radius in range(1, 6):
        expected = sitk.GetArrayFromImage(sitk.BinaryErode(mask, [radius] * 3, sitk.sitkBall))
        ours = sitk.GetArrayFromImage(masks._ball_erode(distance, mask, [radius] * 3))
        assert expected.sum() > 0 and np.array_equal(ours, expected), radius


def test_given_brain_mask_and_channels(tmp_path, testdata):
    data = testdata / "pyradiomics"
    image = read_volume(data / "brain1_image.nrrd")
    sitk.WriteImage(sitk.Cast(image > 50, sitk.sitkUInt8), str(tmp_path / "brain.nrrd"))
    study = load_study({"flair": data / "brain1_image.nrrd", "t1gd": data / "brain1_image.nrrd"},
                       data / "brain1_label.nrrd", brain_mask=tmp_path / "brain.nrrd")
    slices = preprocess(study, PreprocessSettings(max_slices=4))
    assert slices.images.shape == (4, 2, 224, 224) and slices.channels == ("t1gd", "flair")
    assert slices.region == "brain (given mask)"
    np.testing.assert_allclose(slices.images[:, 0], slices.images[:, 1], atol=1e-5)


def test_slices_file_round_trip(tmp_path, lung):
    _, slices = lung
    slices.save(tmp_path / "slices.npz")
    back = Slices.load(tmp_path / "slices.npz")
    np.testing.assert_array_equal(back.images, slices.images)
    np.testing.assert_array_equal(back.pixel_to_lps, slices.pixel_to_lps)
    assert back.channels == slices.channels and back.reference == slices.reference
    assert PreprocessSettings.from_dict(back.settings) == PreprocessSettings()
    with pytest.raises(InputError, match="unknown preprocessing setting 'colour'"):
        PreprocessSettings.from_dict({"colour": 1})


def test_preprocess_command(tmp_path, testdata, run_cli):
    data = testdata / "pyradiomics"
    out, preview = tmp_path / "slices.npz", tmp_path / "preview.png"
    code, stdout, _ = run_cli("preprocess", "--image", f"ct={data / 'lung1_image.nrrd'}",
                              "--segmentation", data / "lung1_label.nrrd", "--label", "1",
                              "--out", out, "--preview", preview, "--max-slices", "6")
    assert code == 0 and "6 slices x 1 channels (ct)" in stdout
    assert Slices.load(out).images.shape == (6, 1, 224, 224)
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and preview.stat().st_size > 20_000


@pytest.mark.parametrize("change, message", [
    (("--label", "3"), "label 3 is not in the segmentation"),
    (("--segment", "tumour"), "--segment needs a Slicer .seg.nrrd"),
    (("--image", "t1=missing.nii.gz"), "a CT study has one channel"),
    (("--image", "pd=missing.nii.gz"), "unknown channel 'pd'"),
])
def test_preprocess_command_bad_input(tmp_path, testdata, run_cli, change, message):
    data = testdata / "pyradiomics"
    out = tmp_path / "slices.npz"
    code, stdout, stderr = run_cli("preprocess", "--image", f"ct={data / 'lung1_image.nrrd'}",
                                   "--segmentation", data / "lung1_label.nrrd", *change,
                                   "--out", out)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_preprocess_command_missing_segmentation(tmp_path, testdata, run_cli):
    data = testdata / "pyradiomics"
    code, _, stderr = run_cli("preprocess", "--image", f"ct={data / 'lung1_image.nrrd'}",
                              "--segmentation", tmp_path / "nope.nrrd", "--out",
                              tmp_path / "s.npz")
    assert code == 2 and "nope.nrrd: no such file or folder" in stderr
    assert list(tmp_path.iterdir()) == []


def test_geometry_of_the_tumour_and_slices_spread_across_it(lung_study):
    """The mask's size and extent in the slices' record; `spread` covers the lesion."""
    largest = preprocess(lung_study, PreprocessSettings(max_slices=4))
    tumour = sitk.GetArrayViewFromImage(lung_study.tumour) > 0
    spacing = lung_study.tumour.GetSpacing()
    assert largest.tumour_volume_ml == pytest.approx(tumour.sum() * np.prod(spacing) / 1000,
                                                     rel=0.05)
    extent_mm = (np.ptp(np.flatnonzero(tumour.any(axis=(1, 2)))) + 1) * spacing[2]
    assert abs(largest.tumour_slices - extent_mm) <= 2  # 1 mm slices over the extent
    geometry = largest.geometry()
    pixel_mm = np.linalg.norm(largest.pixel_to_lps[0][:3, 0])
    assert geometry[0] == pytest.approx(np.log(pixel_mm), rel=1e-3)
    assert geometry[3] == pytest.approx(np.log1p(largest.tumour_volume_ml), rel=1e-5)
    spread = preprocess(lung_study, PreprocessSettings(max_slices=4, slice_choice="spread"))
    z_largest = sorted(float(a[2, 3]) for a in largest.pixel_to_lps)
    z_spread = sorted(float(a[2, 3]) for a in spread.pixel_to_lps)
    assert np.ptp(z_spread) > np.ptp(z_largest)  # from one end of the lesion to the other
    assert np.ptp(z_spread) >= extent_mm - 3


def test_preview_names_the_channel_and_each_slices_position(tmp_path, testdata, run_cli):
    from RadioGenomicsLib.preview import montage_figure

    data = testdata / "pyradiomics"
    out = tmp_path / "slices.npz"
    code, _, err = run_cli("preprocess", "--image", f"ct={data / 'lung1_image.nrrd'}",
                           "--segmentation", data / "lung1_label.nrrd", "--label", "1",
                           "--out", out, "--max-slices", "3")
    assert code == 0, err
    slices = Slices.load(out)
    figure = montage_figure(slices)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    # position along the normal (z in LPS for axial slices): each slice's own
    expected = [f"ct {slices.pixel_to_lps[i][2, 3]:+.1f} mm" for i in range(3)]
    assert [t.split("\n")[0] for t in titles] == expected
    assert len(set(expected)) == 3
    assert "mm along the slice normal" in figure._suptitle.get_text()


def test_mask_and_sub_region_channels_follow_the_images(testdata, tmp_path):
    """The tumour mask and one mask per listed label are input channels after the images,
    cropped with them: the tumour channel is the slice's tumour, the sub-regions split it."""
    data = testdata / "pyradiomics"
    labels = sitk.ReadImage(str(data / "brain1_label.nrrd")) > 0
    array = sitk.GetArrayFromImage(labels).astype(np.uint8)
    zs, ys, xs = np.nonzero(array)
    array[array > 0] = np.where(xs < np.median(xs), 1, 4)  # two sub-regions, left and right
    split = sitk.GetImageFromArray(array)
    split.CopyInformation(labels)
    sitk.WriteImage(split, str(tmp_path / "regions.nrrd"))
    image = data / "brain1_image.nrrd"
    study = load_study({"t1gd": image}, tmp_path / "regions.nrrd", keep_labels=True)
    assert set(np.unique(sitk.GetArrayViewFromImage(study.labels))) == {0, 1, 4}
    settings = PreprocessSettings(max_slices=6, tumour_channel=True, region_labels=(1, 4, 2))
    slices = preprocess(study, settings)
    assert slices.images.shape[1] == 1 + 4 and slices.channels == ("t1gd",)
    tumour = slices.images[:, 1]
    np.testing.assert_array_equal(tumour, slices.tumour.astype(np.float32))
    np.testing.assert_array_equal(slices.images[:, 2] + slices.images[:, 3], tumour)
    assert slices.images[:, 2].any() and slices.images[:, 3].any()
    assert not slices.images[:, 4].any()  # label 2 is not in this segmentation
    plain = preprocess(study, PreprocessSettings(max_slices=6))
    np.testing.assert_array_equal(plain.images[:, 0], slices.images[:, 0])

    unlabelled = load_study({"t1gd": image}, tmp_path / "regions.nrrd")
    with pytest.raises(InputError, match="sub-region channels"):
        preprocess(unlabelled, settings)


def test_sub_region_geometry_is_each_labels_volume_and_share_of_the_tumour(tmp_path):
    """With region_geometry, each region label's volume (ml) and share of the tumour follow
    the 4 geometry values, against a hand count at 1 mm; without it (earlier bundles and
    slice files) the same 4 values, and the settings' dict (a cache key) as before."""
    labels = np.zeros((20, 40, 40), np.uint8)
    labels[5:15, 10:30, 10:30] = 2  # 4,000 voxels of 1 mm3 in all
    labels[8:12, 15:25, 15:25] = 1  # 400
    labels[12:14, 15:25, 15:25] = 4  # 200; label 2 keeps 3,400
    for name, array in (("seg", labels), ("t1", np.random.default_rng(0).normal(
            100, 10, labels.shape).astype(np.float32))):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / f"{name}.nrrd"))
    study = load_study({"t1": tmp_path / "t1.nrrd"}, tmp_path / "seg.nrrd", keep_labels=True)
    settings = PreprocessSettings(max_slices=4, region="none", region_labels=(1, 2, 4, 3),
                                  region_geometry=True)
    slices = preprocess(study, settings)
    assert slices.region_volumes_ml == pytest.approx((0.4, 3.4, 0.2, 0.0))
    names = geometry_names(settings)
    assert len(names) == 4 + 2 * 4 and names[4:6] == ["label 1 log1p_volume_ml", "label 1 share"]
    geometry = slices.geometry()
    assert geometry.shape == (12,) and geometry[3] == pytest.approx(np.log1p(4.0))
    np.testing.assert_allclose(geometry[4:], [np.log1p(0.4), 0.1, np.log1p(3.4), 0.85,
                                              np.log1p(0.2), 0.05, 0.0, 0.0], rtol=1e-5)
    slices.save(tmp_path / "new.npz")
    np.testing.assert_array_equal(Slices.load(tmp_path / "new.npz").geometry(), geometry)

    before = PreprocessSettings(max_slices=4, region="none", region_labels=(1, 2, 4, 3))
    assert "region_geometry" not in before.to_dict() and len(geometry_names(before)) == 4
    old = preprocess(study, before)
    np.testing.assert_array_equal(old.geometry(), geometry[:4])
    # a slices file written before sub-region volumes existed still loads, with 4 values
    old = _rewritten(tmp_path, tmp_path / "new.npz", "old.npz", "region_volumes_ml",
                     before.to_dict())
    np.testing.assert_array_equal(Slices.load(old).geometry(), geometry[:4])
    # region_geometry on, volumes missing
    stale = _rewritten(tmp_path, tmp_path / "new.npz", "stale.npz", "region_volumes_ml")
    with pytest.raises(ValueError, match="no sub-region volumes"):
        Slices.load(stale).geometry()


def test_sub_regions_of_a_slicer_segmentation_are_refused(slicerio_data):
    image, segmentation = slicerio_data / "CTChest4.nrrd", slicerio_data / "Segmentation.seg.nrrd"
    with pytest.raises(InputError, match=r"\.seg\.nrrd.*labelmap"):
        load_study({"ct": image}, segmentation, keep_labels=True)


def _ellipsoid_study(tmp_path, semi_axes_mm, spacing=(1.0, 1.0, 1.0), ragged=0.0):
    """A study whose tumour is an ellipsoid of `semi_axes_mm` (x, y, z), some of its shell
    voxels (within 3 mm outside) added at random with probability `ragged`."""
    shape = (48, 64, 64)  # z, y, x voxels
    z, y, x = (np.mgrid[:shape[0], :shape[1], :shape[2]].astype(float)
               * np.array(spacing[::-1])[:, None, None, None])
    centre = np.array(shape) * np.array(spacing[::-1]) / 2
    inside = sum(((axis - c) / a) ** 2 for axis, c, a in
                 zip((x, y, z), centre[::-1], semi_axes_mm))
    shell = sum(((axis - c) / (a + 3)) ** 2 for axis, c, a in
                zip((x, y, z), centre[::-1], semi_axes_mm)) < 1
    rng = np.random.default_rng(0)
    tumour = (inside < 1) | (shell & (rng.random(shape) < ragged))
    for name, array in (("seg", tumour.astype(np.uint8)),
                        ("t1", rng.normal(100, 10, shape).astype(np.float32))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(tmp_path / f"{name}.nrrd"))
    return load_study({"t1": tmp_path / "t1.nrrd"}, tmp_path / "seg.nrrd")


def test_shape_geometry_is_the_tumours_roundness_elongation_flatness_and_surface(tmp_path):
    """With shape_geometry the 4 shape values follow the 4 geometry values: a ball is round
    (roundness 1, axis ratios 1, surface 4 pi r2), an ellipsoid of semi-axes 20, 10 and 10
    mm on 2 x 2 x 3 mm voxels has elongation 2 and flatness 1 (in voxels it would be 1.5
    flat), a ragged ball is far less round; the values are
    saved with the slices; without the setting, the 4 values and the settings' dict (a
    cache key) as before, and slices written before it refuse to make them up."""
    settings = PreprocessSettings(max_slices=4, region="none", shape_geometry=True)
    names = geometry_names(settings)
    assert names[4:] == ["roundness", "log_elongation", "log_flatness", "log1p_surface_mm2"]

    ball = preprocess(_ellipsoid_study(tmp_path, (12, 12, 12)), settings)
    roundness, elongation, flatness, surface = ball.shape
    assert roundness == pytest.approx(1.0, abs=0.03)
    assert elongation == pytest.approx(1.0, abs=0.03) and flatness == pytest.approx(1.0, abs=0.03)
    assert surface == pytest.approx(4 * np.pi * 12 ** 2, rel=0.05)
    geometry = ball.geometry()
    assert geometry.shape == (8,)
    np.testing.assert_allclose(geometry[4:], [roundness, np.log(elongation), np.log(flatness),
                                              np.log1p(surface)], rtol=1e-6)

    # 2 x 2 x 3 mm voxels, as the synthetic CT has: the statistics are in mm
    ellipsoid = preprocess(_ellipsoid_study(tmp_path, (20, 10, 10), spacing=(2.0, 2.0, 3.0)),
                           PreprocessSettings(spacing_mm=0.0, max_slices=4, region="none",
                                              shape_geometry=True))
    assert ellipsoid.shape[1] == pytest.approx(2.0, rel=0.05)
    assert ellipsoid.shape[2] == pytest.approx(1.0, abs=0.1)
    assert ellipsoid.shape[0] < 0.95

    ragged = preprocess(_ellipsoid_study(tmp_path, (12, 12, 12), ragged=0.3), settings)
    assert ragged.shape[0] < 0.6 * roundness and ragged.shape[3] > 1.5 * surface

    ball.save(tmp_path / "new.npz")
    np.testing.assert_array_equal(Slices.load(tmp_path / "new.npz").geometry(), geometry)
    before = PreprocessSettings(max_slices=4, region="none")
    assert "shape_geometry" not in before.to_dict() and len(geometry_names(before)) == 4
    # shape_geometry on, the shape missing
    stale = _rewritten(tmp_path, tmp_path / "new.npz", "stale.npz", "shape")
    with pytest.raises(ValueError, match="no tumour shape"):
        Slices.load(stale).geometry()
    old = _rewritten(tmp_path, tmp_path / "new.npz", "old.npz", "shape", before.to_dict())
    np.testing.assert_array_equal(Slices.load(old).geometry(), geometry[:4])


def test_a_one_slice_tumour_has_a_finite_shape():
    """A tumour one voxel thick has a zero principal moment: its axis ratios stay finite."""
    mask = np.zeros((5, 20, 20), np.uint8)
    mask[2, 5:15, 5:12] = 1
    values = tumour_shape(sitk.GetImageFromArray(mask))
    assert np.all(np.isfinite(values)) and all(1.0 <= v <= MAX_AXIS_RATIO for v in values[1:3])


def _box_study(tmp_path, channel: str, air_mm: int = 10):
    """A 40 x 40 x 40 mm study (1 mm voxels) whose 10 x 10 x 10 mm tumour holds the values
    0..999 in a shuffled order, in soft tissue (40) reaching `air_mm` from it, then air
    (-1000)."""
    volume = np.full((40, 40, 40), -1000.0, np.float32)
    body = slice(15 - air_mm, 25 + air_mm)
    volume[body, body, body] = 40.0
    volume[15:25, 15:25, 15:25] = np.random.default_rng(0).permutation(1000).reshape(10, 10, 10)
    tumour = np.zeros(volume.shape, np.uint8)
    tumour[15:25, 15:25, 15:25] = 1
    for name, array in (("seg", tumour), (channel, volume)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / f"{name}.nrrd"))
    return load_study({channel: tmp_path / f"{channel}.nrrd"}, tmp_path / "seg.nrrd"), volume


def test_intensity_geometry_is_the_tumours_first_order_statistics(tmp_path):
    """With intensity_geometry 7 values follow the shape's: the tumour's mean, SD and 10th,
    25th, 50th, 75th and 90th percentiles, in HU for a CT (0..999 HU: 499.5, 288.7, 99.9,
    ..., 899.1) whatever the z-scoring, in the z-scored first channel for an MRI; saved
    with the slices; slices written before it refuse to make them up."""
    settings = PreprocessSettings(spacing_mm=0.0, max_slices=4, region="none",
                                  shape_geometry=True, intensity_geometry=True)
    names = geometry_names(settings)
    assert names[8:] == ["intensity_mean", "intensity_sd", "intensity_p10", "intensity_p25",
                         "intensity_p50", "intensity_p75", "intensity_p90"]
    study, volume = _box_study(tmp_path, "ct")
    ct = preprocess(study, settings)
    expected = [499.5, np.sqrt((1000 ** 2 - 1) / 12), 99.9, 249.75, 499.5, 749.25, 899.1]
    np.testing.assert_allclose(ct.intensity, expected, rtol=1e-6)
    geometry = ct.geometry()
    assert geometry.shape == (15,)
    np.testing.assert_allclose(geometry[8:], expected, rtol=1e-6)
    assert geometry[4] == pytest.approx(ct.shape[0])  # the shape stays where it was

    mri = preprocess(_box_study(tmp_path, "t1")[0], settings)  # z-scored over the image
    mean, sd = volume.mean(), volume.std()
    np.testing.assert_allclose(mri.intensity, [(expected[0] - mean) / sd, expected[1] / sd,
                                               *((np.array(expected[2:]) - mean) / sd)],
                               rtol=1e-4)

    ct.save(tmp_path / "new.npz")
    np.testing.assert_array_equal(Slices.load(tmp_path / "new.npz").geometry(), geometry)
    assert "intensity_geometry" not in PreprocessSettings().to_dict()
    stale = _rewritten(tmp_path, tmp_path / "new.npz", "stale.npz", "intensity")
    with pytest.raises(ValueError, match="no tumour or shell intensities"):
        Slices.load(stale).geometry()


def test_shell_geometry_is_what_surrounds_the_tumour(tmp_path):
    """With shell_mm the statistics of the voxels within that many mm outside the tumour
    follow the intensities': a 10 mm cube of 0..999 HU in soft tissue (40 HU) 5 mm from
    air (-1000 HU) has a 2 mm shell of soft tissue alone, whatever the tumour holds, and
    an 8 mm shell that reaches the air; without the setting nothing changes."""
    study = _box_study(tmp_path, "ct", air_mm=5)[0]

    def settings(**extra):
        return PreprocessSettings(spacing_mm=0.0, max_slices=4, region="none", **extra)

    near = preprocess(study, settings(shell_mm=2.0))
    assert geometry_names(settings(shell_mm=2.0))[4:] == ["shell_mean", "shell_sd",
                                                          "shell_p10", "shell_p50", "shell_p90"]
    np.testing.assert_allclose(near.intensity, [40.0, 0.0, 40.0, 40.0, 40.0], atol=1e-9)
    mean, sd, p10, p50, p90 = preprocess(study, settings(shell_mm=8.0)).intensity
    assert p10 == -1000.0 and p50 == p90 == 40.0 and -1000.0 < mean < 40.0 and sd > 100
    both = preprocess(study, settings(intensity_geometry=True, shell_mm=2.0))
    np.testing.assert_allclose(both.geometry()[4:], [499.5, np.sqrt((1000 ** 2 - 1) / 12),
                                                     99.9, 249.75, 499.5, 749.25, 899.1,
                                                     40.0, 0.0, 40.0, 40.0, 40.0],
                               rtol=1e-6, atol=1e-9)
    assert "shell_mm" not in settings().to_dict() and len(preprocess(study, settings())
                                                          .geometry()) == 4
    with pytest.raises(InputError, match="preprocessing settings out of range"):
        settings(shell_mm=-1.0)
