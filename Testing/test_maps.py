"""Per-slice values carried back onto the study's own grid, exactly aligned."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import same_grid
from RadioGenomicsLib.maps import values_to_volume, write_volume
from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess


@pytest.fixture(scope="module")
def lung(lung_study):
    return lung_study, preprocess(lung_study, PreprocessSettings(max_slices=8))


def test_slice_masks_map_back_onto_the_tumour(lung):
    study, slices = lung
    volume = values_to_volume(slices.tumour.astype(np.float32), slices,
                              interpolator=sitk.sitkNearestNeighbor)
    assert same_grid(volume, study.reference)
    mapped = sitk.GetArrayFromImage(volume) > 0.5
    truth = sitk.GetArrayFromImage(study.tumour) > 0
    # only the slabs of the chosen slices are painted, and there they agree with the truth
    # two nearest-neighbour hops (1 mm grid, 224 crop) move only the boundary voxels
    assert mapped.any() and (mapped & truth).sum() / mapped.sum() > 0.9
    painted_planes = np.flatnonzero(mapped.any(axis=(1, 2)))
    assert truth[painted_planes].sum() / mapped.sum() > 0.9


def test_constant_token_grid_fills_exactly_the_slabs(lung):
    study, slices = lung
    values = np.full((len(slices.images), 14, 14), 3.5, np.float32)
    volume = sitk.GetArrayFromImage(values_to_volume(values, slices))
    painted = volume != 0
    assert np.allclose(volume[painted], 3.5)
    # thick CT slices (lung1: 5 mm) are painted whole: 8 chosen 1-mm slices fall in few planes
    planes = np.flatnonzero(painted.any(axis=(1, 2)))
    assert 0 < len(planes) <= len(slices.images)
    spacing = study.reference.GetSpacing()
    side_mm = np.linalg.norm(slices.pixel_to_lps[0][:3, 0]) * 224
    area_voxels = painted[planes[0]].sum()
    assert area_voxels * spacing[0] * spacing[1] == pytest.approx(side_mm ** 2, rel=0.15)


def test_token_grid_orientation_is_kept(lung):
    """A ramp along the slice's columns stays a ramp along the same LPS direction."""
    study, slices = lung
    ramp = np.tile(np.arange(14, dtype=np.float32), (len(slices.images), 14, 1)) + 1
    volume = values_to_volume(ramp, slices)
    array = sitk.GetArrayFromImage(volume)
    column_axis = slices.pixel_to_lps[0][:3, 0]
    z, y, x = np.argwhere(array > 0).T
    points = np.array([volume.TransformIndexToPhysicalPoint((int(a), int(b), int(c)))
                       for a, b, c in zip(x[::50], y[::50], z[::50])])
    along = points @ (column_axis / np.linalg.norm(column_axis))
    assert np.corrcoef(along, array[z[::50], y[::50], x[::50]])[0, 1] > 0.99


def test_write_volume_by_suffix(tmp_path, lung):
    _, slices = lung
    volume = values_to_volume(np.ones((len(slices.images), 14, 14), np.float32), slices)
    for name in ("map.nrrd", "map.nii.gz"):
        write_volume(volume, tmp_path / name)
        back = sitk.ReadImage(str(tmp_path / name))
        assert same_grid(back, volume)
    with pytest.raises(InputError, match="unknown volume format"):
        write_volume(volume, tmp_path / "map.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nii.gz", "map.nrrd"]
