"""Pictures for a person to check at a glance: the chosen slices with the tumour outline,
and gene maps drawn over the study on the tumour's slices."""

from __future__ import annotations

import math
import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from RadioGenomicsLib.atomic import atomic_path  # noqa: E402
from RadioGenomicsLib.preprocess import Slices, axial_axis  # noqa: E402

COLUMNS = 8
MAP_SLICES = 6  # columns of a map picture: slices evenly through the tumour
OUTLINE = "#ff0000"  # pure red: in no colour of the map's colour map (viridis)
MAP_COLOURS = "viridis"
DPI = 110


def slice_position_mm(slices: Slices, index: int) -> float:
    """Where slice `index` lies along the slice normal (LPS mm), as viewers show it."""
    affine = slices.pixel_to_lps[index]
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    return float(normal @ affine[:3, 3])


def montage_figure(slices: Slices, channel: int = 0, title: str = ""):
    """A grid of the slices (one channel, grey) with the tumour outlined in red; each
    panel names the channel and its position along the slice normal."""
    count = len(slices.images)
    columns = min(COLUMNS, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows + 0.4),
                                squeeze=False)
    values = slices.images[:, channel]
    low, high = np.percentile(values, [1, 99]) if values.size else (0, 1)
    name = slices.channels[channel]
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= count:
            continue
        axis.imshow(values[index], cmap="gray", vmin=low, vmax=high, interpolation="bilinear")
        if slices.tumour[index].any():
            axis.contour(slices.tumour[index], levels=[0.5], colors="red", linewidths=0.8)
        axis.set_title(f"{name} {slice_position_mm(slices, index):+.1f} mm\n"
                       f"#{index + 1}  {slices.tumour_area_mm2[index]:.0f} mm²", fontsize=7)
    heading = title or f"{count} tumour slices, channel {name}"
    figure.suptitle(f"{heading}  (position: mm along the slice normal; normalised in: "
                    f"{slices.region})", fontsize=9)
    figure.tight_layout()
    return figure


def save_montage(slices: Slices, path: str | os.PathLike, channel: int = 0,
                 title: str = "") -> None:
    figure = montage_figure(slices, channel, title)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
    plt.close(figure)


# ---------------------------------------------------------------- gene maps


def _tumour_slices(tumour: np.ndarray, axis_zyx: int, count: int) -> list[int]:
    """Up to `count` slice indices evenly from one end of the tumour to the other."""
    other = tuple(a for a in range(3) if a != axis_zyx)
    holding = np.flatnonzero(tumour.any(axis=other))
    picks = np.unique(np.round(np.linspace(0, len(holding) - 1, min(count, len(holding)))))
    return holding[picks.astype(int)].tolist()


def _in_plane_box(region: np.ndarray, axis_zyx: int, pad: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the slices (after taking `axis_zyx`) around `region`, padded."""
    plane = np.any(region, axis=axis_zyx)
    bounds = []
    for keep, extra in zip((1, 0), pad):
        hit = np.flatnonzero(plane.any(axis=keep))
        bounds.append(slice(max(hit.min() - extra, 0), min(hit.max() + extra + 1,
                                                            plane.shape[1 - keep])))
    return bounds[0], bounds[1]


def map_figure(maps: Mapping[str, sitk.Image], tumour: sitk.Image, study: sitk.Image | None,
               units: str, title: str = "", slices: int = MAP_SLICES):
    """Each gene's map (a row) over the study (grey) on slices through the tumour (columns),
    the tumour outlined in red, one colour bar per gene in `units`. Returns the figure and
    its panels: gene, slice index, position (mm along the normal), axes."""
    axis = axial_axis(tumour)  # ITK index order; the array's axis is 2 - axis
    axis_zyx = 2 - axis
    inside = sitk.GetArrayFromImage(tumour) > 0
    arrays = {gene: sitk.GetArrayFromImage(image) for gene, image in maps.items()}
    chosen = _tumour_slices(inside, axis_zyx, slices)
    painted = inside | np.any([np.isfinite(a) for a in arrays.values()], axis=0)
    spacing = np.asarray(tumour.GetSpacing())
    plane = [a for a in range(3) if a != axis]  # ITK axes of the columns, rows
    pad = tuple(int(np.ceil(10.0 / spacing[a])) for a in plane[::-1])  # 10 mm around
    rows, columns = _in_plane_box(painted, axis_zyx, pad)
    background = None if study is None else sitk.GetArrayFromImage(study)
    normal = np.asarray(tumour.GetDirection()).reshape(3, 3)[:, axis]
    figure, axes = plt.subplots(len(arrays), len(chosen), squeeze=False, dpi=DPI,
                                figsize=(1.9 * len(chosen) + 1.2, 2.0 * len(arrays) + 0.5))
    panels = []
    for row, (gene, values) in enumerate(arrays.items()):
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        shown = None
        for column, k in enumerate(chosen):
            ax = axes[row, column]
            ax.set_axis_off()
            index = [0, 0, 0]
            index[axis] = k
            position = float(normal @ np.asarray(tumour.TransformIndexToPhysicalPoint(index)))
            part = (slice(None), rows, columns)
            if background is not None:
                grey = np.take(background, k, axis=axis_zyx)[rows, columns]
                ax.imshow(grey, cmap="gray", aspect=spacing[plane[1]] / spacing[plane[0]],
                          vmin=np.percentile(grey, 1), vmax=np.percentile(grey, 99))
            layer = np.take(values, k, axis=axis_zyx)[part[1:]]
            shown = ax.imshow(np.ma.masked_invalid(layer), cmap=MAP_COLOURS, vmin=low, vmax=high,
                              interpolation="nearest",
                              aspect=spacing[plane[1]] / spacing[plane[0]])
            mask = np.take(inside, k, axis=axis_zyx)[part[1:]]
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=OUTLINE, linewidths=1.0)
            ax.set_title(f"{gene}  {position:+.1f} mm", fontsize=7)
            panels.append({"gene": gene, "slice": k, "position_mm": position, "axes": ax})
        bar = figure.colorbar(shown, ax=list(axes[row]), fraction=0.03, pad=0.02)
        bar.set_label(units, fontsize=6)
        bar.ax.tick_params(labelsize=6)
    figure.suptitle(title or "gene maps over the study; red: the tumour; position: mm along "
                             "the slice normal", fontsize=8)
    return figure, panels


def panel_boxes(figure, panels: list[dict]) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (left, top, right, bottom) of the panels in the saved PNG."""
    figure.canvas.draw()
    height = figure.bbox.height
    boxes = []
    for panel in panels:
        box = panel["axes"].get_window_extent()
        boxes.append((int(np.ceil(box.x0)), int(np.ceil(height - box.y1)),
                      int(np.floor(box.x1)), int(np.floor(height - box.y0))))
    return boxes


def save_map_picture(maps: Mapping[str, sitk.Image], tumour: sitk.Image,
                     study: sitk.Image | None, units: str, path: str | os.PathLike,
                     title: str = "") -> list[dict]:
    """`map_figure` as a PNG; returns its panels, each with its pixel box ("box")."""
    figure, panels = map_figure(maps, tumour, study, units, title)
    for panel, box in zip(panels, panel_boxes(figure, panels)):
        panel["box"] = box
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
    plt.close(figure)
    return panels
