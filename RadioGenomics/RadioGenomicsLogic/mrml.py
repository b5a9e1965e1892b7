"""MRML nodes <-> the files and tables that `radiogenomics predict` reads and writes.

Geometry: files hold LPS (ITK, NRRD, NIfTI); MRML holds RAS. Volumes cross the
boundary only through Slicer's own volume storage node (the reader and writer of
File > Save / Add Data), which flips the first two axes (RAS = diag(-1, -1, 1) · LPS),
so nothing here converts coordinates by hand.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import vtk
from vtk.util import numpy_support

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.genetable import BOOLEAN_COLUMNS, INTEGER_COLUMNS, TEXT_COLUMNS


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


# ---------------------------------------------------------------- volumes


def array_kji(volume_node) -> np.ndarray:
    """The voxels of a volume node as a numpy view, indexed [k, j, i]."""
    image = volume_node.GetImageData()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(
        image.GetDimensions()[::-1])


def ijk_to_ras(volume_node) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def check_untransformed(node) -> None:
    """Files carry no MRML transform: a transformed node would be written misaligned."""
    if node.GetParentTransformNode() is not None:
        raise ValueError(f"{node.GetName()}: is under a transform; harden the transform "
                         "(Data module, right-click) before predicting")


def _volume_storage_node(scene, path: str | os.PathLike):
    storage = scene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.UnRegister(None)  # CreateNodeByClass hands over a reference Python also holds
    storage.SetFileName(os.fspath(path))
    return storage


def write_volume(volume_node, path: str | os.PathLike) -> None:
    """Write a volume (NRRD or NIfTI by the name) as Slicer saves it: LPS in the file.

    A temporary storage node does the writing, so the node keeps pointing at its own
    file and a saved scene never refers to the temporary copy.
    """
    check_untransformed(volume_node)
    storage = _volume_storage_node(volume_node.GetScene(), path)
    storage.SetUseCompression(False)  # read once by the predictor: speed over size
    if not storage.WriteData(volume_node):
        raise OSError(f"{path}: Slicer could not write volume {volume_node.GetName()!r}")


def load_volume(scene, path: str | os.PathLike, name: str, labelmap: bool = False):
    """Read a NRRD / NIfTI file (LPS, as ITK writes it) into a new volume node (RAS)."""
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, name)
    if not _volume_storage_node(scene, path).ReadData(node):
        scene.RemoveNode(node)
        raise OSError(f"{path}: Slicer could not read this volume")
    return node


def _segmentations_logic():
    """Slicer's segmentation logic class (imported on use: at module import time the
    Segmentations module may not be loaded yet)."""
    try:  # inside the Slicer application
        from vtkSlicerSegmentationsModuleLogicPython import vtkSlicerSegmentationsModuleLogic
    except ImportError:  # the slicer-core wheel (pytest)
        from slicer_core.vtkSlicerSegmentationsModuleLogic import vtkSlicerSegmentationsModuleLogic
    return vtkSlicerSegmentationsModuleLogic


def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}


def _remove_display_helpers(scene, existing: set[str]) -> None:
    """Remove the display and colour nodes an export added: the labelmap is never shown."""
    for node_id in _node_ids(scene) - existing:
        node = scene.GetNodeByID(node_id)
        if node.IsA("vtkMRMLDisplayNode") or node.IsA("vtkMRMLColorNode"):
            scene.RemoveNode(node)


def labelmap_from_segment(segmentation_node, segment_id: str, reference_volume, name: str):
    """One segment as a 0/1 labelmap node on the reference volume's grid (new scene node).

    Slicer's segmentation logic does the resampling (nearest neighbour), whatever grid
    the segment was painted on.
    """
    check_untransformed(segmentation_node)
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise ValueError(f"{segmentation_node.GetName()}: has no segment {segment_id!r}")
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    existing = _node_ids(scene)
    exported = _segmentations_logic().ExportSegmentsToLabelmapNode(
        segmentation_node, [segment_id], labelmap, reference_volume)
    _remove_display_helpers(scene, existing)
    if not exported or labelmap.GetImageData() is None:
        scene.RemoveNode(labelmap)
        raise ValueError(f"{segmentation_node.GetName()}: segment {segment_id!r} could not be "
                         "exported to a labelmap")
    voxels = array_kji(labelmap)
    voxels[voxels != 0] = 1  # the exported label value follows the segment order
    if not voxels.any():
        scene.RemoveNode(labelmap)
        segment_name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        raise ValueError(f"{segmentation_node.GetName()}: segment {segment_name!r} is empty "
                         "inside the reference volume")
    labelmap.GetImageData().Modified()
    return labelmap


def write_segment(segmentation_node, segment_id: str, reference_volume,
                  path: str | os.PathLike) -> None:
    """Write one segment as a 0/1 labelmap file on the reference volume's grid."""
    labelmap = labelmap_from_segment(segmentation_node, segment_id, reference_volume,
                                     "RadioGenomics export")
    try:
        write_volume(labelmap, path)
    finally:
        labelmap.GetScene().RemoveNode(labelmap)


def show_as_map(volume_node, color_node_id: str) -> tuple[float, float]:
    """Display a gene map: a colour map over its value range, transparent where no value.

    The predictor writes 0 where a map has no value (outside the tumour slices); those
    voxels become NaN, which the display threshold leaves transparent even when the
    values straddle 0. Returns the (low, high) range of the values.
    """
    voxels = array_kji(volume_node)
    if not np.issubdtype(voxels.dtype, np.floating):
        raise ValueError(f"{volume_node.GetName()}: a map must hold floating-point values")
    voxels[voxels == 0] = np.nan
    volume_node.GetImageData().Modified()
    values = voxels[np.isfinite(voxels)]
    if values.size == 0:
        raise ValueError(f"{volume_node.GetName()}: the map has no value anywhere")
    low, high = float(values.min()), float(values.max())
    if volume_node.GetDisplayNode() is None:
        volume_node.CreateDefaultDisplayNodes()
    display = volume_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node_id)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
    display.AutoThresholdOff()
    display.SetThreshold(low, high)
    display.ApplyThresholdOn()
    display.SetInterpolate(False)  # one value per token: show the tokens as they are
    return low, high


# ---------------------------------------------------------------- gene tables


def _column_array(name: str):
    if name in INTEGER_COLUMNS:
        array = vtk.vtkIntArray()
    elif name in BOOLEAN_COLUMNS:
        array = vtk.vtkBitArray()
    elif name in TEXT_COLUMNS:
        array = vtk.vtkStringArray()
    else:
        array = vtk.vtkDoubleArray()
    array.SetName(name)
    return array


def _parse(text: str, name: str, path: Path, line: int):
    text = text.strip()
    try:
        if name in TEXT_COLUMNS:
            return text
        if name in INTEGER_COLUMNS:
            return int(text)
        if name in BOOLEAN_COLUMNS:
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError(text)
            return int(text.lower() in _TRUE)
        return float(text) if text else math.nan  # pandas writes NaN as an empty field
    except ValueError:
        raise ValueError(f"{path}: line {line}, column {name}: {text!r} is not a valid "
                         "value") from None


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".txt") else ","


def read_gene_table(scene, path: str | os.PathLike, name: str,
                    units: dict[str, str] | None = None):
    """A gene table file (CSV or TSV by the name) as a new table node with typed columns."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file, delimiter=_delimiter(path))
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty gene table")
        arrays = [_column_array(column) for column in header]
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}: line {line} has {len(row)} fields, "
                                 f"the header {len(header)}")
            for array, column, text in zip(arrays, header, row):
                array.InsertNextValue(_parse(text, column, path, line))
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table.SetLocked(True)  # a result: edits in the view would silently change it
    for array in arrays:
        table.AddColumn(array)
    for column, unit in (units or {}).items():
        if column in header:
            table.SetColumnUnitLabel(column, unit)
    return table


def import_results(scene, record, holder) -> None:
    """A finished job's prediction run into `holder` (the module's parameter node, or any
    object with its result fields): the gene table as a locked table node with the
    record's units, a filtered view with the record's markers pinned, the run, the model
    and the background volume the results belong to. Everything comes from the job's
    start `record` (RadioGenomicsLogic.jobs.JobRecord), nothing from the holder's current
    selections, which may have changed (or the holder been replaced) while the job ran."""
    for old in (holder.results, holder.resultsView, holder.geneMap):
        if old is not None:
            scene.RemoveNode(old)
    name = scene.GenerateUniqueName("RadioGenomics genes")
    table = read_gene_table(scene, Path(record.run_folder) / "genes.csv", name, record.units)
    holder.resultsView = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} (shown)")
    holder.results, holder.geneMap = table, None
    holder.runFolder, holder.resultsModel = record.run_folder, record.model
    holder.resultsMarkers = ",".join(record.markers)
    first_channel = next(iter(record.node_ids.values()), None)
    holder.resultsVolume = scene.GetNodeByID(first_channel) if first_channel else None
    show_results(holder)


def show_results(holder) -> None:
    """Fill the holder's view of its results: filter applied, markers pinned."""
    markers = [m for m in holder.resultsMarkers.split(",") if m]
    rows = display_rows(holder.results, markers, holder.reliableOnly, holder.search)
    copy_rows(holder.results, holder.resultsView, rows)


def _format(array, row: int) -> str:
    value = array.GetValue(row)
    if isinstance(array, vtk.vtkBitArray):
        return "True" if value else "False"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_gene_table(table_node, path: str | os.PathLike) -> None:
    """Write a table node as CSV or TSV (by the name), the predictor's own format."""
    path = Path(path)
    table = table_node.GetTable()
    arrays = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    with atomic_path(path) as partial:
        with open(partial, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, delimiter=_delimiter(path), lineterminator="\n")
            writer.writerow([array.GetName() for array in arrays])
            for row in range(table.GetNumberOfRows()):
                writer.writerow([_format(array, row) for array in arrays])


def column_values(table_node, name: str) -> list:
    """One column of a table node as a Python list."""
    array = table_node.GetTable().GetColumnByName(name)
    if array is None:
        raise ValueError(f"{table_node.GetName()}: has no column {name!r}")
    return [array.GetValue(row) for row in range(array.GetNumberOfTuples())]


def display_rows(table_node, pinned: Sequence[str] = (), reliable_only: bool = False,
                 search: str = "") -> list[int]:
    """Rows to show: the filter applied, pinned genes first (in `pinned` order), then rank."""
    names = column_values(table_node, "gene_name")
    ids = column_values(table_node, "gene_id")
    reliable = column_values(table_node, "reliable") if reliable_only else None
    needle = search.strip().lower()
    shown = [row for row in range(len(names))
             if (reliable is None or reliable[row])
             and (not needle or needle in names[row].lower() or needle in ids[row].lower())]
    order = {gene: position for position, gene in enumerate(pinned)}
    first = sorted((row for row in shown if names[row] in order), key=lambda r: order[names[r]])
    return first + [row for row in shown if names[row] not in order]


def _copy_column_properties(source_node, target_node) -> None:
    """Units, descriptions and types of every column, from one table node to another."""
    properties = vtk.vtkStringArray()
    source_node.GetAllColumnPropertyNames(properties)
    table = source_node.GetTable()
    for column in range(table.GetNumberOfColumns()):
        name = table.GetColumnName(column)
        for index in range(properties.GetNumberOfValues()):
            prop = properties.GetValue(index)
            target_node.SetColumnProperty(name, prop, source_node.GetColumnProperty(name, prop))


def copy_rows(source_node, target_node, rows: Iterable[int]) -> None:
    """Fill `target_node` with the given rows of `source_node` (same columns and units)."""
    source = source_node.GetTable()
    ids_from, ids_to = vtk.vtkIdList(), vtk.vtkIdList()
    for position, row in enumerate(rows):
        ids_from.InsertNextId(row)
        ids_to.InsertNextId(position)
    was_modifying = target_node.StartModify()
    target_node.SetLocked(False)
    target_node.RemoveAllColumns()
    for column in range(source.GetNumberOfColumns()):
        array = source.GetColumn(column)
        copy = array.NewInstance()
        copy.SetName(array.GetName())
        copy.SetNumberOfComponents(array.GetNumberOfComponents())
        copy.InsertTuples(ids_to, ids_from, array)
        target_node.AddColumn(copy)
    _copy_column_properties(source_node, target_node)
    target_node.SetLocked(True)
    target_node.EndModify(was_modifying)
