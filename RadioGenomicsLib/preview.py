"""Pictures for a person to check at a glance: the chosen slices with the tumour outline."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from RadioGenomicsLib.atomic import atomic_path  # noqa: E402
from RadioGenomicsLib.preprocess import Slices  # noqa: E402

COLUMNS = 8


def save_montage(slices: Slices, path: str | os.PathLike, channel: int = 0,
                 title: str = "") -> None:
    """A grid of the slices (one channel, grey) with the tumour outlined in red."""
    count = len(slices.images)
    columns = min(COLUMNS, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows + 0.4),
                                squeeze=False)
    values = slices.images[:, channel]
    low, high = np.percentile(values, [1, 99]) if values.size else (0, 1)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= count:
            continue
        axis.imshow(values[index], cmap="gray", vmin=low, vmax=high, interpolation="bilinear")
        if slices.tumour[index].any():
            axis.contour(slices.tumour[index], levels=[0.5], colors="red", linewidths=0.8)
        axis.set_title(f"#{index + 1}  {slices.tumour_area_mm2[index]:.0f} mm²", fontsize=7)
    heading = title or f"{count} tumour slices, channel {slices.channels[channel]}"
    figure.suptitle(f"{heading}  (normalised in: {slices.region})", fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
