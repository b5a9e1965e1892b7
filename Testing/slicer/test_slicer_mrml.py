"""The Slicer module's MRML glue against the real MRML classes of the `slicer-core` wheel.

Runs in its own environment (`make slicer-test`: `.venv-slicer`, since slicer-core pins
its own vtk); in the main environment, which has no MRML, it is skipped.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core: run `make slicer-test`")
sitk = pytest.importorskip("SimpleITK")
vtk = pytest.importorskip("vtk")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "RadioGenomics"))
from RadioGenomicsLogic import mrml  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def oblique_direction() -> np.ndarray:
    """A rotation about an oblique axis: catches any swapped or transposed axis."""
    angle, axis = 0.3, np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def itk_image(shape_kji=(6, 7, 8), spacing=(0.8, 1.1, 2.5), origin=(-30.0, 12.0, 5.0)):
    voxels = np.arange(np.prod(shape_kji), dtype=np.float32).reshape(shape_kji)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(oblique_direction().flatten().tolist())
    return image, voxels


def ras_of(node, ijk) -> np.ndarray:
    return (mrml.ijk_to_ras(node) @ np.array([*ijk, 1.0]))[:3]


def lps_of(image, ijk) -> np.ndarray:
    return np.array(image.TransformIndexToPhysicalPoint([int(v) for v in ijk]))


VOXELS = [(0, 0, 0), (7, 0, 0), (0, 6, 0), (0, 0, 5), (3, 4, 2), (7, 6, 5)]


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_map_file_loads_with_its_lps_geometry_flipped_to_ras(tmp_path, scene, suffix):
    image, voxels = itk_image()
    path = tmp_path / f"EGFR{suffix}"
    sitk.WriteImage(image, str(path))

    node = mrml.load_volume(scene, path, "EGFR map")

    assert node.GetImageData().GetDimensions() == (8, 7, 6)
    for ijk in VOXELS:
        np.testing.assert_allclose(ras_of(node, ijk), LPS_TO_RAS @ lps_of(image, ijk), atol=1e-4)
        i, j, k = ijk
        assert mrml.array_kji(node)[k, j, i] == voxels[k, j, i]


def test_unreadable_map_raises_and_leaves_no_node(tmp_path, scene):
    path = tmp_path / "broken.nrrd"
    path.write_text("not a volume")
    before = scene.GetNumberOfNodes()
    with pytest.raises(OSError, match="broken.nrrd"):
        mrml.load_volume(scene, path, "broken")
    assert scene.GetNumberOfNodes() == before


def volume_node(scene, voxels: np.ndarray, ijk_to_ras: np.ndarray, name="volume",
                node_class="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(node_class, name)
    image = vtk.vtkImageData()
    image.SetDimensions(voxels.shape[::-1])
    image.GetPointData().SetScalars(
        vtk.util.numpy_support.numpy_to_vtk(voxels.ravel(), deep=True))
    node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, ijk_to_ras[r, c])
    node.SetIJKToRASMatrix(matrix)
    return node


def affine(direction, spacing, origin) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(direction) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_written_volume_reads_in_itk_at_the_same_place(tmp_path, scene, suffix):
    voxels = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    node = volume_node(scene, voxels, affine(oblique_direction(), (0.9, 1.2, 3.0), (4, -5, 6)))
    path = tmp_path / f"t1{suffix}"

    mrml.write_volume(node, path)

    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), voxels)
    for ijk in [(0, 0, 0), (6, 0, 0), (0, 5, 0), (0, 0, 4), (3, 2, 1)]:
        np.testing.assert_allclose(LPS_TO_RAS @ lps_of(image, ijk), ras_of(node, ijk), atol=1e-4)
    assert node.GetStorageNode() is None  # the node was not re-pointed at the temporary file


def test_transformed_volume_is_refused(tmp_path, scene):
    node = volume_node(scene, np.zeros((2, 2, 2), np.float32), np.eye(4), name="flair")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="flair: is under a transform"):
        mrml.write_volume(node, tmp_path / "flair.nrrd")
    assert not (tmp_path / "flair.nrrd").exists()


# ---------------------------------------------------------------- segments


REFERENCE = affine(oblique_direction(), (1.0, 1.0, 2.0), (10.0, -20.0, 30.0))


def segmentation_on_its_own_grid(scene):
    """A box segment painted on a finer, shifted grid than the reference volume.

    Returns the segmentation, the segment id, and the box corners in RAS.
    """
    fine = affine(oblique_direction(), (0.5, 0.5, 1.0), (10.25, -19.75, 29.5))
    labels = np.zeros((24, 40, 40), np.uint8)
    labels[6:18, 10:30, 12:28] = 1  # k, j, i
    labelmap = volume_node(scene, labels, fine, "painted", "vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "tumour")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        labelmap, segmentation)
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    low = (fine @ np.array([12, 10, 6, 1.0]))[:3]
    high = (fine @ np.array([27, 29, 17, 1.0]))[:3]
    return segmentation, segment_id, low, high


def test_segment_is_exported_on_the_reference_grid(scene):
    reference = volume_node(scene, np.zeros((10, 20, 20), np.float32), REFERENCE, "t1")
    segmentation, segment_id, low, high = segmentation_on_its_own_grid(scene)

    labelmap = mrml.labelmap_from_segment(segmentation, segment_id, reference, "mask")

    assert labelmap.GetImageData().GetDimensions() == (20, 20, 10)
    np.testing.assert_allclose(mrml.ijk_to_ras(labelmap), REFERENCE, atol=1e-6)
    mask = mrml.array_kji(labelmap)
    assert set(np.unique(mask)) == {0, 1}
    ras_to_ijk = np.linalg.inv(REFERENCE)
    inside = (ras_to_ijk @ np.array([*((low + high) / 2), 1.0]))[:3].round().astype(int)
    assert mask[inside[2], inside[1], inside[0]] == 1
    assert mask[0, 0, 0] == mask[-1, -1, -1] == 0  # grid corners, outside the box
    # the box is 8 x 10 x 12 mm: 8 x 10 x 6 voxels of the reference (1 x 1 x 2 mm)
    assert mask.sum() == pytest.approx(8 * 10 * 6, rel=0.2)


def node_ids(scene) -> set[str]:
    """The scene's nodes but the subject hierarchy (a singleton made on first use)."""
    nodes = (scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes()))
    return {node.GetID() for node in nodes if not node.IsA("vtkMRMLSubjectHierarchyNode")}


def test_written_segment_lies_where_the_reference_lies(tmp_path, scene):
    reference = volume_node(scene, np.zeros((10, 20, 20), np.float32), REFERENCE, "t1")
    segmentation, segment_id, _, _ = segmentation_on_its_own_grid(scene)
    nodes_before = node_ids(scene)

    mrml.write_segment(segmentation, segment_id, reference, tmp_path / "tumour.nrrd")
    mrml.write_volume(reference, tmp_path / "t1.nrrd")

    mask, image = (sitk.ReadImage(str(tmp_path / n)) for n in ("tumour.nrrd", "t1.nrrd"))
    assert mask.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-6)
    assert sitk.GetArrayFromImage(mask).max() == 1
    assert node_ids(scene) == nodes_before  # the temporary labelmap and its helpers are gone


def test_empty_or_unknown_segment_is_a_clear_error(scene):
    reference = volume_node(scene, np.zeros((10, 20, 20), np.float32), REFERENCE, "t1")
    segmentation, segment_id, _, _ = segmentation_on_its_own_grid(scene)
    with pytest.raises(ValueError, match="has no segment 'nope'"):
        mrml.labelmap_from_segment(segmentation, "nope", reference, "mask")

    far = volume_node(scene, np.zeros((4, 4, 4), np.float32),
                      affine(np.eye(3), (1, 1, 1), (500, 500, 500)), "far")
    with pytest.raises(ValueError, match="is empty inside the reference volume"):
        mrml.labelmap_from_segment(segmentation, segment_id, far, "mask")


# ---------------------------------------------------------------- maps


def test_map_display_hides_voxels_without_value(scene):
    voxels = np.zeros((3, 4, 5), np.float32)
    voxels[1, 1:3, 1:4] = [[-0.5, 1.5, 2.0], [2.5, 3.0, 4.25]]  # values straddle 0
    node = volume_node(scene, voxels, np.eye(4), "KRAS map")

    low, high = mrml.show_as_map(node, "vtkMRMLColorTableNodeFileViridis.txt")

    display = node.GetDisplayNode()
    assert (low, high) == (-0.5, 4.25)
    assert display.GetApplyThreshold() == 1
    assert (display.GetLowerThreshold(), display.GetUpperThreshold()) == (-0.5, 4.25)
    shown = mrml.array_kji(node)
    assert np.isnan(shown[0, 0, 0]) and np.isnan(shown[2, 3, 4])  # no value: outside the threshold
    assert np.isfinite(shown).sum() == 6 and shown[1, 2, 3] == 4.25
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeFileViridis.txt"
    assert (display.GetWindow(), display.GetLevel()) == (pytest.approx(4.75), pytest.approx(1.875))


def test_map_without_values_is_refused(scene):
    node = volume_node(scene, np.zeros((2, 2, 2), np.float32), np.eye(4), "empty map")
    with pytest.raises(ValueError, match="no value anywhere"):
        mrml.show_as_map(node, "vtkMRMLColorTableNodeGrey")


# ---------------------------------------------------------------- gene tables


GENE_TABLE = """\
rank,gene_id,gene_name,predicted,lower,upper,cohort_z,cohort_percentile,validation_r,validation_p_adj,reliable
1,ENSG00000146648.18,EGFR,3.25,3.0,3.5,2.125,98.5,0.41,0.0003,True
2,ENSG00000141510.17,TP53,2.5,2.25,2.75,1.5,93.0,,,False
3,ENSG00000138413.14,IDH1,1.75,1.5,2.0,-0.25,40.125,0.12,0.5,False
4,ENSG00000133703.13,KRAS,1.0,0.5,1.5,-1.0,15.0,0.33,0.01,True
5,ENSG00000157764.14,BRAF,0.5,0.25,0.75,-2.0,2.5,0.05,1.0,False
"""
UNITS = {"predicted": "log10(1 + FPKM-UQ)", "cohort_z": "SD", "cohort_percentile": "%"}


@pytest.fixture
def gene_table(tmp_path, scene):
    path = tmp_path / "genes.csv"
    path.write_text(GENE_TABLE)
    return mrml.read_gene_table(scene, path, "genes", UNITS)


def test_gene_table_columns_are_typed_and_carry_units(gene_table):
    table = gene_table.GetTable()
    assert table.GetNumberOfRows() == 5
    types = {table.GetColumnName(c): table.GetColumn(c).GetClassName()
             for c in range(table.GetNumberOfColumns())}
    assert types["rank"] == "vtkIntArray"
    assert types["gene_id"] == types["gene_name"] == "vtkStringArray"
    assert types["reliable"] == "vtkBitArray"
    assert {types[c] for c in ("predicted", "lower", "upper", "cohort_z", "cohort_percentile",
                               "validation_r", "validation_p_adj")} == {"vtkDoubleArray"}
    assert mrml.column_values(gene_table, "gene_name") == ["EGFR", "TP53", "IDH1", "KRAS", "BRAF"]
    assert mrml.column_values(gene_table, "reliable") == [1, 0, 0, 1, 0]
    assert mrml.column_values(gene_table, "cohort_percentile")[2] == 40.125
    assert math.isnan(mrml.column_values(gene_table, "validation_r")[1])
    assert gene_table.GetColumnUnitLabel("predicted") == "log10(1 + FPKM-UQ)"
    assert gene_table.GetColumnUnitLabel("cohort_percentile") == "%"


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_gene_table_round_trip_keeps_values_and_types(tmp_path, scene, gene_table, suffix):
    path = tmp_path / f"exported{suffix}"
    mrml.write_gene_table(gene_table, path)

    if suffix == ".csv":
        assert path.read_text() == GENE_TABLE
    else:
        assert path.read_text() == GENE_TABLE.replace(",", "\t")
    again = mrml.read_gene_table(scene, path, "again")
    for c in range(gene_table.GetTable().GetNumberOfColumns()):
        name = gene_table.GetTable().GetColumnName(c)
        assert (again.GetTable().GetColumnByName(name).GetClassName()
                == gene_table.GetTable().GetColumn(c).GetClassName())
        before, after = mrml.column_values(gene_table, name), mrml.column_values(again, name)
        assert [str(v) for v in before] == [str(v) for v in after]
    assert list(tmp_path.glob(".*partial*")) == []


@pytest.mark.parametrize("bad, message", [
    ("1,ENSG1,EGFR,high,1,2,0,50,0.1,0.1,True", "line 2, column predicted: 'high'"),
    ("1,ENSG1,EGFR,1.0,1,2,0,50,0.1,0.1,maybe", "line 2, column reliable: 'maybe'"),
    ("1.5,ENSG1,EGFR,1.0,1,2,0,50,0.1,0.1,True", "line 2, column rank: '1.5'"),
    ("1,ENSG1,EGFR,1.0", "line 2 has 4 fields, the header 11"),
])
def test_bad_gene_table_names_line_and_column(tmp_path, scene, bad, message):
    path = tmp_path / "genes.csv"
    path.write_text(GENE_TABLE.splitlines()[0] + "\n" + bad + "\n")
    with pytest.raises(ValueError, match=message):
        mrml.read_gene_table(scene, path, "genes")


MARKERS = ("IDH1", "EGFR", "MGMT", "KRAS", "ALK", "BRAF", "CHEK2", "TP53")


def test_markers_are_pinned_in_their_order_then_rank(gene_table):
    names = mrml.column_values(gene_table, "gene_name")
    rows = mrml.display_rows(gene_table, pinned=("IDH1", "KRAS"))
    assert [names[r] for r in rows] == ["IDH1", "KRAS", "EGFR", "TP53", "BRAF"]


def test_reliable_filter_and_search(gene_table):
    names = mrml.column_values(gene_table, "gene_name")
    assert [names[r] for r in mrml.display_rows(gene_table, MARKERS, reliable_only=True)] \
        == ["EGFR", "KRAS"]
    assert [names[r] for r in mrml.display_rows(gene_table, MARKERS, search=" tp5")] == ["TP53"]
    assert [names[r] for r in mrml.display_rows(gene_table, (), search="ENSG00000157764")] \
        == ["BRAF"]
    assert mrml.display_rows(gene_table, MARKERS, reliable_only=True, search="BRAF") == []


def test_copied_rows_keep_types_values_and_units(scene, gene_table):
    view = scene.AddNewNodeByClass("vtkMRMLTableNode", "view")
    mrml.copy_rows(gene_table, view, [3, 0])
    assert mrml.column_values(view, "gene_name") == ["KRAS", "EGFR"]
    assert mrml.column_values(view, "rank") == [4, 1]
    assert mrml.column_values(view, "reliable") == [1, 1]
    assert view.GetTable().GetColumnByName("reliable").GetClassName() == "vtkBitArray"
    assert view.GetColumnUnitLabel("predicted") == "log10(1 + FPKM-UQ)"

    mrml.copy_rows(gene_table, view, [])  # a filter that matches nothing
    assert view.GetTable().GetNumberOfRows() == 0
    assert view.GetTable().GetNumberOfColumns() == 11


def empty_holder(**selections):
    """The result fields of the module's parameter node, on a plain object."""
    from types import SimpleNamespace

    return SimpleNamespace(results=None, resultsView=None, geneMap=None, runFolder="",
                           resultsModel="", resultsMarkers="", resultsVolume=None,
                           reliableOnly=False, search="", **selections)


def test_a_finished_job_imports_its_run_from_its_start_record(tmp_path, scene):
    """Leaving the module (or changing inputs) while a prediction runs: the results still
    land, with the units, markers, model and volume the job was started with."""
    from RadioGenomicsLogic.jobs import JobRecord

    run = tmp_path / "run"
    run.mkdir()
    (run / "genes.csv").write_text(GENE_TABLE)
    started_on = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "t1 at start")
    first = empty_holder(model="/models/gbm", channel=started_on)
    record = JobRecord("predict", str(run), first.model, {"t1": started_on.GetID()}, UNITS,
                       ("KRAS", "IDH1"))
    # while the job runs: the module is left, the scene's parameter node is replaced and
    # another model and volume are chosen
    replaced = empty_holder(model="/models/other",
                            channel=scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "new"))
    mrml.import_results(scene, record, replaced)
    assert replaced.runFolder == str(run) and replaced.resultsModel == "/models/gbm"
    assert replaced.resultsVolume is started_on
    assert replaced.results.GetColumnUnitLabel("predicted") == "log10(1 + FPKM-UQ)"
    assert mrml.column_values(replaced.resultsView, "gene_name") == [
        "KRAS", "IDH1", "EGFR", "TP53", "BRAF"]  # the record's markers pinned, then rank
    assert first.results is None  # the old holder is left alone
    # a second run replaces the first run's nodes in the scene
    old_table, old_view = replaced.results, replaced.resultsView
    mrml.import_results(scene, record, replaced)
    assert scene.GetNodeByID(old_table.GetID()) is None
    assert scene.GetNodeByID(old_view.GetID()) is None
    replaced.reliableOnly, replaced.search = True, "ENSG0000014"
    mrml.show_results(replaced)
    assert mrml.column_values(replaced.resultsView, "gene_name") == ["EGFR"]
