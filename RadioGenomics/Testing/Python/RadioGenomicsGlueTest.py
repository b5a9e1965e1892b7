"""The MRML glue inside Slicer: the same file gives the same geometry through the glue
and through Slicer's own loader, and a written volume reads back where it was.
(pytest covers the glue in depth against slicer-core; this checks the application's
import paths and readers.)"""

import tempfile
import unittest
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import slicer
from RadioGenomicsLogic import mrml


class RadioGenomicsGlueTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_map_geometry_matches_slicer_loader(self):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "EGFR.nrrd"
            image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
            image.SetSpacing((0.7, 0.8, 3.0))
            image.SetOrigin((-12.0, 40.0, 7.0))
            image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
            sitk.WriteImage(image, str(path))
            ours = mrml.load_volume(slicer.mrmlScene, path, "ours")
            theirs = slicer.util.loadVolume(str(path))
            np.testing.assert_allclose(mrml.ijk_to_ras(ours), mrml.ijk_to_ras(theirs), atol=1e-6)
            np.testing.assert_array_equal(mrml.array_kji(ours), slicer.util.arrayFromVolume(theirs))

    def test_written_volume_reads_back_in_place(self):
        volume = slicer.util.addVolumeFromArray(
            np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32),
            np.array([[0, -1.2, 0, 5], [0.9, 0, 0, -3], [0, 0, 2.0, 11], [0, 0, 0, 1]]), "t1")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "t1.nrrd"
            mrml.write_volume(volume, path)
            again = slicer.util.loadVolume(str(path))
        np.testing.assert_allclose(mrml.ijk_to_ras(again), mrml.ijk_to_ras(volume), atol=1e-5)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(again),
                                      slicer.util.arrayFromVolume(volume))
