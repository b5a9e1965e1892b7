"""The viewer: trame-slicer's slice and 3D views beside a panel that walks the flow of
the Slicer module (study -> tumour -> model -> Predict -> gene table -> gene maps).

Everything the page shows comes from the library's files, turned into MRML nodes by
the module's glue (RadioGenomicsLogic/mrml.py). Prediction runs as `radiogenomics
predict --run DIR` in a child process (jobs.py), so the server stays responsive and
Cancel works; any gene's map is then drawn from that prediction run in-process
(`run_maps`, under a second), in a worker thread. So are the DICOM export of a run
(SEG, Parametric Map, SR, PDF, Secondary Capture, downloaded as one zip) and the talk
with a configured DICOMweb server (list its studies, fetch one, store the results).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trame.app import TrameApp
from trame.app.file_upload import ClientFile
from trame.widgets import html
from trame.widgets import vuetify3 as v
from trame_server.utils.asynchronous import create_task
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationEffectPaint
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout

from RadioGenomicsLib.card import RESEARCH_NOTICE, BundleCard, read_card
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.genetable import TABLE_COLUMNS
from RadioGenomicsLogic import mrml

from . import hospital
from .jobs import CliJob
from .security import access_token, confine, is_loopback, save_upload
from .study import StudyFolder

MAP_COLOR_NODE_ID = "vtkMRMLColorTableNodeRainbow"  # a table node: its legend can be drawn
MAP_OPACITY = 0.6
SHOWN_ROWS = 500  # rows sent to the page; the search reaches the others
LAYOUT = "Axial Primary"


@dataclass
class Settings:
    """What the server was started with; every path the page may touch lies under these."""

    models: list[Path]
    studies: list[Path]
    work: Path
    upload_limit: int
    demo: Path | None
    pacs: str | None = None  # a DICOMweb root; its credentials only from the environment
    roots: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.roots = [*self.models, *self.studies, self.work]


def list_bundles(roots: list[Path]) -> list[dict]:
    """Bundles in the models folders (a folder with metadata.json, or the folder itself)."""
    found = []
    for root in roots:
        candidates = [root] if (root / "metadata.json").is_file() else sorted(
            p for p in root.iterdir() if (p / "metadata.json").is_file()) if root.is_dir() else []
        found += [{"title": p.name, "value": str(p)} for p in candidates]
    return found


def card_lines(card: BundleCard) -> list[str]:
    """The model card: what a radiologist should read before trusting a number."""
    cohort = ", ".join(f"{k} {v}" for k, v in card.training_cohort.items()
                       if isinstance(v, (str, int, float)) and v != "")
    lines = [f"Channels: {', '.join(card.channels)}",
             f"Training cohort: {cohort or 'not given'}",
             f"Validation: {card.validation_text()}",
             f"Units: {card.target_transform} of {card.target_units}",
             f"Model: {card.model.get('name', '?')}, {card.folds} fold model(s), "
             f"{card.genes} genes; markers {', '.join(card.markers)}"]
    if card.synthetic:
        lines.insert(0, "Trained on synthetic data (or untrained): not for real studies.")
    return lines


class Viewer(TrameApp):
    def __init__(self, settings: Settings, server=None):
        super().__init__(server, client_type="vue3")
        self.settings = settings
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager,
                                            self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout_manager.set_layout(LAYOUT)
        self.study: StudyFolder | None = None
        self.job: CliJob | None = None
        self.run_folder: Path | None = None
        self.table_node = None
        self.nodes: dict[str, object] = {}  # "background", "tumour", "map" -> scene node
        self.runs = 0
        self.card: BundleCard | None = None  # the chosen bundle's card
        self.tumour_centre: list[float] | None = None  # RAS, where the views centre
        self.pacs_uids: set[str] = set()  # the studies listed: the only ones the page may open
        self._initial_state()
        self._bind()
        self._build_ui()
        if self.state.model:
            self._on_model(self.state.model)

    # ------------------------------------------------------------ state

    def _initial_state(self) -> None:
        s = self.state
        s.trame__title = "RadioGenomics"
        s.studies = [{"title": p.name or str(p), "value": str(p)} for p in self.settings.studies]
        s.study_path = ""
        s.sample_label = ""
        s.models = list_bundles(self.settings.models)
        s.model = s.models[0]["value"] if len(s.models) == 1 else ""  # nothing to choose
        s.card = []
        s.channels = []
        s.image_items = []
        s.assignments = []  # [{"channel": "t1", "file": path}]
        s.segmentation_items = []
        s.segmentation = ""
        s.tumour_items = []  # labels or segments of the segmentation
        s.tumour = None
        s.folds = "all"
        s.busy = False
        s.progress = 0
        s.progress_text = ""
        s.error = ""
        s.status = "Choose a study and a model, or load the sample."
        s.headers = []
        s.rows = []
        s.row_count = 0
        s.search = ""
        s.reliable_only = False
        s.gene = ""
        s.map_low = s.map_high = 0.0
        s.map_units = ""
        s.legend = ""
        s.opacity = MAP_OPACITY
        s.has_results = False
        s.painting = False
        s.cancellable = False  # a child process runs (Predict, the sample), not a thread
        s.pacs = bool(self.settings.pacs)
        s.pacs_studies = []  # [{"title": patient, date, description; "value": study UID}]
        s.dicom_ready = False  # the run's DICOM results are written and zipped

    def _bind(self) -> None:
        self.state.change("study_path")(self._on_study)
        self.state.change("model")(self._on_model)
        self.state.change("segmentation")(self._on_segmentation)
        self.state.change("search", "reliable_only")(self._refresh_rows)
        self.state.change("opacity")(self._on_opacity)
        self.state.change("assignments", "tumour")(self._on_inputs_changed)

    def _fail(self, error: Exception) -> None:
        self.state.error = str(error)

    # ------------------------------------------------------------ study

    def _on_study(self, study_path, **_) -> None:
        if not study_path:
            return
        try:
            self.study = StudyFolder.scan(confine(study_path, self.settings.roots))
        except InputError as error:
            return self._fail(error)
        self.state.error = ""
        self._clear_results()  # another study's table and maps must not stay on show
        self._replace("painted", None)
        self.state.painting = False
        if not self.study.folder.is_relative_to(self.settings.work / "sample"):
            self.state.sample_label = ""
        self.state.image_items = [{"title": p.name, "value": str(p)} for p in self.study.images()]
        self.state.segmentation_items = [{"title": p.name, "value": str(p)}
                                         for p in self.study.segmentations()]
        chosen = self.study.default_segmentation()
        self._assign_channels()
        self.state.segmentation = str(chosen) if chosen else ""

    def _assign_channels(self) -> None:
        if self.study is None or not self.state.channels:
            self.state.assignments = []
            return
        assigned = self.study.assign(list(self.state.channels))
        self.state.assignments = [{"channel": c, "file": f} for c, f in assigned.items()]

    def _on_inputs_changed(self, **_) -> None:
        files = {a["channel"]: a["file"] for a in self.state.assignments if a["file"]}
        if files:
            try:  # the page's state is the client's to write: check every path it names
                path = confine(files.get("t1gd") or next(iter(files.values())),
                               self.settings.roots)
            except InputError as error:
                return self._fail(error)
            self._show_background(path)

    def _show_background(self, path: Path) -> None:
        """The study on the slice views (T1Gd when there is one: the tumour shows best)."""
        current = self.nodes.get("background")
        if current is not None and current.GetAttribute("RadioGenomics.source") == str(path):
            return
        try:
            node = mrml.load_volume(self.slicer.scene, self._displayable(path), path.name)
        except (OSError, InputError) as error:
            return self._fail(error)
        node.SetAttribute("RadioGenomics.source", str(path))
        self._replace("background", node)
        self.slicer.display_manager.show_volume_in_slice_background(node)
        self.slicer.display_manager.reset_views()
        if self.tumour_centre is not None:  # the tumour may have come first
            self._jump_to(self.tumour_centre)

    def _displayable(self, path: Path) -> Path:
        """A file Slicer's volume reader opens: a DICOM series folder becomes a NRRD copy."""
        if not path.is_dir():
            return path
        from RadioGenomicsLib.imaging import read_volume
        from RadioGenomicsLib.maps import write_volume

        copy = self.settings.work / "display" / f"{path.name}.nrrd"
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            write_volume(read_volume(path), copy)
        return copy

    def _on_segmentation(self, segmentation, **_) -> None:
        self.state.tumour_items, self.state.tumour = [], None
        if not segmentation:
            return
        try:
            path = confine(segmentation, self.settings.roots)
            self.state.tumour_items = tumour_choices(path)
            self._show_tumour(path)
        except (OSError, InputError, ValueError) as error:
            return self._fail(error)
        if len(self.state.tumour_items) == 1:
            self.state.tumour = self.state.tumour_items[0]["value"]

    def _show_tumour(self, path: Path) -> None:
        """The segmentation as outlines on the slices and a surface in 3D."""
        scene = self.slicer.scene
        if path.name.lower().endswith(".seg.nrrd"):
            node = self.slicer.io_manager.load_segmentation(path)
        else:
            labels = mrml.load_volume(scene, self._labelmap(path), path.name, labelmap=True)
            node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", path.name)
            self.slicer.segmentations_logic.ImportLabelmapToSegmentationNode(labels, node)
            scene.RemoveNode(labels)
        node.CreateDefaultDisplayNodes()
        node.CreateClosedSurfaceRepresentation()
        display = node.GetDisplayNode()
        display.SetOpacity2DFill(0.0)  # outlines only: the gene map shows through
        self._replace("tumour", node)
        bounds = [0.0] * 6
        node.GetRASBounds(bounds)
        self.tumour_centre = None
        if bounds[0] <= bounds[1]:  # an empty segmentation has no bounds
            self.tumour_centre = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2,
                                  (bounds[4] + bounds[5]) / 2]
            self._jump_to(self.tumour_centre)

    def _labelmap(self, path: Path) -> Path:
        """A file Slicer's volume reader opens: a DICOM SEG becomes a NRRD labelmap copy on
        the study's grid (the library's reading of it, as Predict reads it)."""
        from RadioGenomicsLib.imaging import is_dicom_seg, read_segmentation

        if not is_dicom_seg(path):
            return path
        import SimpleITK as sitk

        copy = self.settings.work / "display" / f"{path.stem}.labels.nrrd"
        if not copy.exists():
            images = self.study.images() if self.study else []
            if not images:
                raise InputError(path, "a DICOM SEG needs the study's images to lie on")
            reference = sitk.ReadImage(str(self._displayable(images[0])))
            copy.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(read_segmentation(path, reference), str(copy), True)
        return copy

    def _jump_to(self, ras) -> None:
        """Every slice view centred on this point (RAS), moved to the study's nearest voxel
        centre so that each view shows whole voxels (what is painted shows where it lies)."""
        import numpy as np

        background = self.nodes.get("background")
        if background is not None:
            to_ras = mrml.ijk_to_ras(background)
            ijk = np.round(np.linalg.inv(to_ras) @ np.array([*ras, 1.0]))
            ras = (to_ras @ ijk)[:3]
        for view in self.slicer.view_manager.get_slice_views():
            view.get_view_node().JumpSliceByCentering(*[float(x) for x in ras])

    def _replace(self, role: str, node) -> None:
        previous = self.nodes.get(role)
        if previous is not None:
            self.slicer.scene.RemoveNode(previous)
        self.nodes[role] = node

    # ------------------------------------------------------------ painting the tumour

    def start_painting(self) -> None:
        """Paint the tumour on the slice views with Slicer's segment editor (paint effect)."""
        background = self.nodes.get("background")
        if background is None:
            return self._fail(InputError(None, "choose the study's images first"))
        editor = self.slicer.segmentation_editor
        node = editor.create_empty_segmentation_node()
        node.SetName("painted tumour")
        self._replace("painted", node)
        editor.set_active_segmentation(node, background)
        editor.add_empty_segment(segment_name="tumour", segment_color=[1.0, 0.5, 0.0])
        editor.set_active_effect_type(SegmentationEffectPaint)
        self.state.painting, self.state.error = True, ""
        self.state.status = "Paint the tumour on the slices (drag), then use it."

    def use_painting(self) -> None:
        """The painted segment as a 0/1 labelmap file on the study's grid (the Slicer
        module's export: RadioGenomicsLogic.mrml.write_segment), chosen as the tumour."""
        node, background = self.nodes.get("painted"), self.nodes.get("background")
        self.slicer.segmentation_editor.deactivate_effect()
        self.state.painting = False
        if node is None or background is None:
            return
        folder = self.settings.work / "painted"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"painted-{len(list(folder.iterdir())) + 1}.nrrd"
        segment_id = node.GetSegmentation().GetNthSegmentID(0)
        try:
            mrml.write_segment(node, segment_id, background, path)
        except (OSError, ValueError) as error:
            return self._fail(error)
        self._replace("painted", None)
        self.state.segmentation_items = [*self.state.segmentation_items,
                                         {"title": path.name, "value": str(path)}]
        self.state.segmentation = str(path)
        self.state.status = f"The painted tumour is {path.name}."

    # ------------------------------------------------------------ model

    def _on_model(self, model, **_) -> None:
        self.state.card, self.state.channels, self.card = [], [], None
        if not model:
            return
        try:  # the standard library only: no torch, no child process
            self.card = read_card(confine(model, self.settings.roots))
        except InputError as error:
            return self._fail(error)
        self.state.card = card_lines(self.card)
        self.state.channels = list(self.card.channels)
        self._assign_channels()

    # ------------------------------------------------------------ sample and upload

    def load_sample(self) -> None:
        create_task(self._load_sample())

    async def _load_sample(self) -> None:
        out = self.settings.work / "sample"
        with self.state:
            self.state.error = ""
        arguments = ["--sample", "--out", str(out)]
        if self.settings.demo is not None:
            arguments += ["--from-demo", str(self.settings.demo)]
        if not (out / "sample.json").is_file():
            self.job = CliJob(arguments, self._on_progress, module="RadioGenomicsLib.demo")
            with self.state:
                self.state.busy, self.state.cancellable, self.state.error = True, True, ""
                self.state.status = "Making the synthetic sample..."
            succeeded = await self.job.run()
            with self.state:
                self.state.busy = False
                if not succeeded:
                    self.state.error = self.job.error_message()
                    return
        sample = json.loads((out / "sample.json").read_text())
        with self.state:
            bundle = {"title": f"{Path(sample['bundle']).name} (sample)", "value": sample["bundle"]}
            if bundle not in self.state.models:
                self.state.models = [*self.state.models, bundle]
            self.state.sample_label = sample["label"]
            self.state.study_path = str(Path(sample["segmentation"]).parent)
            self.state.model = sample["bundle"]
            self.state.status = f"Sample loaded: {sample['patient']}."

    def upload(self, files) -> None:
        """Files chosen in the page: a new study folder under the session's folder."""
        uploads = self.settings.work / "uploads"
        self.state.error = ""
        folder = uploads / f"{len(os.listdir(uploads)) + 1}"
        try:
            for file in map(ClientFile, files or []):  # content may arrive in chunks
                save_upload(file.name, file.content, folder, self.settings.upload_limit)
        except InputError as error:
            shutil.rmtree(folder, ignore_errors=True)
            return self._fail(error)
        entry = {"title": f"upload {folder.name}", "value": str(folder)}
        self.state.studies = [*self.state.studies, entry]
        self.state.study_path = str(folder)

    # ------------------------------------------------------------ predict

    def _inputs_arguments(self) -> list[str]:
        missing = [a["channel"] for a in self.state.assignments if not a["file"]]
        if not self.state.model:
            raise InputError(None, "choose a model")
        if missing or not self.state.assignments:
            raise InputError(None, f"choose the file of channel {', '.join(missing) or '?'}")
        if not self.state.segmentation:
            raise InputError(None, "choose the tumour segmentation")
        roots = self.settings.roots
        arguments = ["--model", str(confine(self.state.model, roots))]
        for a in self.state.assignments:
            arguments.append(f"--image={a['channel']}={confine(a['file'], roots)}")
        arguments += ["--segmentation", str(confine(self.state.segmentation, roots))]
        tumour = self.state.tumour
        if isinstance(tumour, int) or (isinstance(tumour, str) and tumour.isdigit()):
            arguments += ["--label", str(tumour)]
        elif tumour:
            arguments += ["--segment", str(tumour)]
        return arguments

    def predict(self) -> None:
        if self.state.busy:  # one job at a time
            return
        try:
            arguments = self._inputs_arguments()
        except InputError as error:
            return self._fail(error)
        self.runs += 1
        run = self.settings.work / "runs" / f"{self.runs:03d}"
        arguments = ["predict", *arguments, "--out", str(run / "genes.csv"), "--run",
                     str(run / "run"), "--folds", self.state.folds, "--device", "cpu",
                     "--runtime", "auto"]  # exported fold models without PyTorch, else torch
        self._clear_results()
        create_task(self._predict(arguments, run))

    async def _predict(self, arguments: list[str], run: Path) -> None:
        self.job = CliJob(arguments, self._on_progress)
        with self.state:
            self.state.busy, self.state.error, self.state.progress = True, "", 0
            self.state.cancellable = True
            self.state.progress_text = "reading and preprocessing the study"  # no count yet
            self.state.status = "Predicting..."
        succeeded = await self.job.run()
        with self.state:
            self.state.busy = False
            if not succeeded:
                self.state.error = self.job.error_message()
                self.state.status = "Prediction stopped."
                return
            self.run_folder = run
            self._show_table(run / "genes.csv")
            settings = json.loads((run / "run" / "run.json").read_text())["settings"]
            self.state.status = (f"Predicted {self.state.row_count} genes ({settings['runtime']}, "
                                 f"{settings['precision']}).")
        # the maps are drawn from the run (numpy, no torch): import that now, not on the first click
        await asyncio.to_thread(importlib.import_module, "RadioGenomicsLib.run")
        await asyncio.to_thread(importlib.import_module, "RadioGenomicsLib.bundle")

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _on_progress(self, done: int, total: int, step: str) -> None:
        with self.state:
            self.state.progress = round(100 * done / total) if total else 0
            self.state.progress_text = f"{step} ({done}/{total or '?'})"

    # ------------------------------------------------------------ results

    def _clear_results(self) -> None:
        self._replace("map", None)
        if self.table_node is not None:
            self.slicer.scene.RemoveNode(self.table_node)
        self.table_node, self.run_folder = None, None
        self.state.has_results, self.state.rows, self.state.gene = False, [], ""
        self.state.map_units = ""
        self.state.dicom_ready = False

    def _show_table(self, path: Path) -> None:
        units = self.card.units
        if self.table_node is not None:
            self.slicer.scene.RemoveNode(self.table_node)
        self.table_node = mrml.read_gene_table(self.slicer.scene, path, "genes", units)
        self.state.headers = [{"title": f"{c} ({units[c]})" if c in units else c, "key": c,
                               "sortable": False} for c in TABLE_COLUMNS]
        self.state.has_results = True
        self._refresh_rows()

    def _refresh_rows(self, **_) -> None:
        if self.table_node is None:
            return
        markers = self.card.markers
        rows = mrml.display_rows(self.table_node, markers, self.state.reliable_only,
                                 self.state.search or "")
        columns = {c: mrml.column_values(self.table_node, c) for c in TABLE_COLUMNS}
        self.state.row_count = len(rows)
        self.state.rows = [{c: _cell(columns[c][r]) for c in TABLE_COLUMNS}
                           | {"marker": columns["gene_name"][r] in markers}
                           for r in rows[:SHOWN_ROWS]]

    def select_gene(self, gene: str) -> None:
        if self.run_folder is None:
            return
        self.state.gene, self.state.map_units = gene, ""
        path = self._map_file(gene)
        if path is not None:
            return self._show_map(gene, path)
        create_task(self._draw_map(gene))

    def _map_file(self, gene: str) -> Path | None:
        from RadioGenomicsLib.predict import map_file_name

        path = self.run_folder / "maps" / map_file_name(gene, ".nrrd") if self.run_folder else None
        return path if path is not None and path.is_file() else None

    async def _draw_map(self, gene: str) -> None:
        """The gene's map from the prediction run (saved tokens x the gene's head weights),
        in a worker thread; the scene is touched back on the server's loop."""
        run_folder = self.run_folder
        with self.state:
            self.state.status = f"Drawing the map of {gene}..."
        try:
            await asyncio.to_thread(draw_map, run_folder, gene)
        except InputError as error:
            with self.state:
                self._fail(error)
            return
        with self.state:
            if self.state.gene == gene and self.run_folder == run_folder:
                self._show_map(gene, self._map_file(gene))

    def _show_map(self, gene: str, path: Path) -> None:
        try:
            node = mrml.load_volume(self.slicer.scene, path, f"{gene} map")
            low, high = mrml.show_as_map(node, MAP_COLOR_NODE_ID)
        except (OSError, ValueError) as error:
            return self._fail(error)
        self._replace("map", node)
        self.slicer.display_manager.show_volume_in_slice_foreground(node)
        self._jump_to(support_centre(node))
        self._on_opacity(self.state.opacity)
        self.state.map_low, self.state.map_high = round(low, 4), round(high, 4)
        self.state.map_units = self.card.units["predicted"]
        self.state.legend = legend_gradient(self.slicer.scene.GetNodeByID(MAP_COLOR_NODE_ID))
        self.state.status = f"Showing the map of {gene}."

    def _on_opacity(self, opacity, **_) -> None:
        for view in self.slicer.view_manager.get_slice_views():
            view.set_foreground_opacity(float(opacity))

    # ------------------------------------------------------------ export (browser downloads)

    def export_table(self, suffix: str):
        if self.table_node is None:
            return None
        with tempfile.TemporaryDirectory(dir=self.settings.work) as folder:
            path = Path(folder) / f"genes{suffix}"
            mrml.write_gene_table(self.table_node, path)
            return self.server.protocol.addAttachment(path.read_bytes())

    def export_map(self):
        path = self._map_file(self.state.gene) if self.state.gene else None
        return self.server.protocol.addAttachment(path.read_bytes()) if path else None

    # ------------------------------------------------------------ DICOM and the PACS

    async def _in_worker(self, step: str, work, *arguments):
        """`work(*arguments)` in a worker thread, with the progress bar on (no Cancel: a
        thread cannot be stopped); None after showing the library's one-line error."""
        with self.state:
            self.state.busy, self.state.cancellable, self.state.progress = True, False, 0
            self.state.progress_text, self.state.error = step, ""
        try:
            return await asyncio.to_thread(work, *arguments)
        except (InputError, OSError, ValueError) as error:
            with self.state:
                self._fail(error)
            return None
        finally:
            with self.state:
                self.state.busy = False

    def export_dicom(self) -> None:
        if self.run_folder is not None and not self.state.busy:
            create_task(self._export_dicom(self.run_folder, self.state.gene))

    async def _export_dicom(self, run_folder: Path, gene: str) -> None:
        written = await self._in_worker("writing the DICOM objects", hospital.export_dicom,
                                        run_folder / "run", gene or None, run_folder / "dicom")
        if written is None:
            return
        with self.state:
            if self.run_folder == run_folder:
                self.state.dicom_ready = True
                self.state.status = ("DICOM results (research use only): "
                                     + ", ".join(p.name for p in written))

    def _dicom_files(self) -> list[Path]:
        folder = self.run_folder / "dicom" if self.run_folder else None
        return sorted(folder.glob("*.dcm")) if folder and folder.is_dir() else []

    def dicom_zip(self):
        path = self.run_folder / "dicom.zip" if self.state.dicom_ready else None
        return self.server.protocol.addAttachment(path.read_bytes()) if path else None

    def send_to_pacs(self) -> None:
        if self.settings.pacs and self.state.dicom_ready and not self.state.busy:
            create_task(self._send_to_pacs(self._dicom_files()))

    async def _send_to_pacs(self, files: list[Path]) -> None:
        from RadioGenomicsLib.pacs import store

        stored = await self._in_worker("sending to the PACS", store, self.settings.pacs, files)
        if stored is not None:
            with self.state:
                self.state.status = f"{stored} DICOM objects stored on the PACS."

    def list_pacs_studies(self) -> None:
        if self.settings.pacs and not self.state.busy:
            create_task(self._list_pacs_studies())

    async def _list_pacs_studies(self) -> None:
        from RadioGenomicsLib.pacs import list_studies

        studies = await self._in_worker("listing the PACS studies", list_studies,
                                        self.settings.pacs)
        if studies is not None:
            self.pacs_uids = {s.uid for s in studies}
            with self.state:
                self.state.pacs_studies = hospital.study_items(studies)
                self.state.status = (f"{len(studies)} "
                                     f"{'study' if len(studies) == 1 else 'studies'} on the PACS.")

    def open_pacs_study(self, uid: str) -> None:
        # the UID comes from the page: only a listed study, never a path of the server's
        if self.settings.pacs and not self.state.busy and uid in self.pacs_uids:
            folder = self.settings.work / "pacs" / f"study-{len(self._pacs_folders()) + 1}"
            create_task(self._open_pacs_study(uid, folder))

    def _pacs_folders(self) -> list[Path]:
        folder = self.settings.work / "pacs"
        return list(folder.iterdir()) if folder.is_dir() else []

    async def _open_pacs_study(self, uid: str, folder: Path) -> None:
        """Fetch the study into the session's folder, then open it like a server study."""
        from RadioGenomicsLib.pacs import fetch_study

        fetched = await self._in_worker("fetching the study from the PACS", fetch_study,
                                        self.settings.pacs, uid, folder)
        if fetched is None or await self._in_worker("sorting the series", hospital.split_series,
                                                    folder) is None:
            return
        title = next((s["title"] for s in self.state.pacs_studies if s["value"] == uid), uid)
        with self.state:
            self.state.studies = [*self.state.studies, {"title": f"PACS: {title}",
                                                        "value": str(folder)}]
            self.state.study_path = str(folder)
        with self.state:
            self.state.status = (f"Opened from the PACS: {sum(s.instances for s in fetched)} "
                                 f"instances of {len(fetched)} series.")

    # ------------------------------------------------------------ page

    def _trigger(self, method) -> str:
        return self.server.controller.trigger_name(method)

    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server, full_height=True) as ui:
            self.ui = ui
            ui.title.set_text("RadioGenomics")
            with ui.toolbar:
                v.VSpacer()
                html.Span(RESEARCH_NOTICE, classes="text-caption mr-4")
            with ui.drawer as drawer:
                drawer.width = 460
                self._panel()
            with ui.content:
                self.layout_manager.initialize_layout_grid(ui)

    def _panel(self) -> None:
        with html.Div(classes="pa-3 d-flex flex-column ga-2"):
            v.VAlert(text=("sample_label",), v_if="sample_label", type="warning",
                     density="compact", variant="tonal", raw_attrs=['data-testid="sample-label"'])
            v.VBtn("Load sample", click=self.load_sample, disabled=("busy",), block=True,
                   raw_attrs=['data-testid="load-sample"'])
            html.Div("Study", classes="text-subtitle-2")
            self._pacs_studies()
            v.VCombobox(v_model=("study_path",), items=("studies",), label="Study folder on the server",
                        density="compact", hide_details=True, item_title="title",
                        item_value="value", return_object=False,
                        raw_attrs=['data-testid="study-path"'])
            v.VFileInput(label="Upload a study (NIfTI, NRRD, DICOM zip)", multiple=True,
                         density="compact", hide_details=True,
                         change=f"trigger('{self._trigger(self.upload)}', [$event.target.files])",
                         raw_attrs=['data-testid="upload"'])
            html.Div("Model", classes="text-subtitle-2")
            v.VSelect(v_model=("model",), items=("models",), label="Model bundle", density="compact",
                      hide_details=True)
            with v.VCard(v_if="card.length", variant="tonal", density="compact",
                         raw_attrs=['data-testid="model-card"']):
                with v.VCardText(classes="text-caption"):
                    html.Div("{{ line }}", v_for="line in card")
                    html.Div(RESEARCH_NOTICE, classes="font-weight-bold")
            with html.Div(v_for="(row, i) in assignments", key="row.channel"):
                v.VSelect(model_value=("row.file",), items=("image_items",),
                          label=("`Channel ${row.channel}`",), density="compact",
                          hide_details=True,
                          update_modelValue="assignments[i].file = $event; flushState('assignments')")
            v.VSelect(v_model=("segmentation",), items=("segmentation_items",),
                      label="Tumour segmentation", density="compact", hide_details=True)
            v.VSelect(v_model=("tumour",), items=("tumour_items",), label="Tumour label or segment",
                      density="compact", hide_details=True, v_if="tumour_items.length")
            with html.Div(classes="d-flex ga-2"):
                v.VBtn("Paint the tumour", size="small", click=self.start_painting,
                       disabled=("painting || busy",), prepend_icon="mdi-brush",
                       raw_attrs=['data-testid="paint"'])
                v.VBtn("Use the painting", size="small", click=self.use_painting,
                       disabled=("!painting",), raw_attrs=['data-testid="use-painting"'])
            with v.VBtnToggle(v_model=("folds",), mandatory=True, density="compact"):
                v.VBtn("all folds", value="all")
                v.VBtn("first fold (faster)", value="first")
            with html.Div(classes="d-flex ga-2"):
                v.VBtn("Predict", click=self.predict, disabled=("busy",), color="primary",
                       raw_attrs=['data-testid="predict"'])
                v.VBtn("Cancel", click=self.cancel, disabled=("!busy || !cancellable",),
                       raw_attrs=['data-testid="cancel"'])
            v.VProgressLinear(model_value=("progress",), v_if="busy", height=8,
                              indeterminate=("progress === 0",),
                              raw_attrs=['data-testid="progress"'])
            html.Div("{{ progress_text }}", v_if="busy", classes="text-caption",
                     raw_attrs=['data-testid="step"'])
            html.Div("{{ status }}", classes="text-caption", raw_attrs=['data-testid="status"'])
            v.VAlert(text=("error",), v_if="error", type="error", density="compact",
                     raw_attrs=['data-testid="error"'])
            self._results()

    def _pacs_studies(self) -> None:
        """The configured DICOMweb server's studies; a click fetches and opens one."""
        with v.VCard(v_if="pacs", variant="outlined", density="compact",
                     raw_attrs=['data-testid="pacs"']):
            with v.VCardTitle(classes="text-body-2 d-flex align-center"):
                html.Span("Studies on the PACS")
                v.VSpacer()
                v.VBtn("Refresh", size="x-small", variant="text", click=self.list_pacs_studies,
                       disabled=("busy",), raw_attrs=['data-testid="pacs-refresh"'])
            with v.VList(density="compact", max_height=180, classes="py-0"):
                v.VListItem(title=("s.title",), v_for="s in pacs_studies", key="s.value",
                            click=(self.open_pacs_study, "[s.value]"), disabled=("busy",),
                            raw_attrs=[':data-study="s.value"'])

    def _results(self) -> None:
        with html.Div(v_if="has_results", classes="d-flex flex-column ga-2"):
            with html.Div(classes="d-flex ga-2 align-center"):
                v.VTextField(v_model=("search",), label="Search symbol or Ensembl id",
                             density="compact", hide_details=True, clearable=True)
                v.VSwitch(v_model=("reliable_only",), label="reliable only", density="compact",
                          hide_details=True)
            html.Div("{{ row_count }} genes (markers first)", classes="text-caption")
            with v.VDataTable(headers=("headers",), items=("rows",), density="compact",
                              items_per_page=10, height=320, fixed_header=True,
                              raw_attrs=['data-testid="gene-table"']):
                with v.Template(raw_attrs=['v-slot:item.gene_name="{ item }"']):
                    v.VBtn("{{ item.gene_name }}", size="small", variant="text",
                           color=("item.marker ? 'primary' : undefined",),
                           click=(self.select_gene, "[item.gene_name]"),
                           raw_attrs=[':data-gene="item.gene_name"'])
            with html.Div(v_if="map_units", classes="d-flex flex-column ga-1",
                          raw_attrs=['data-testid="legend"']):
                html.Div("Map of {{ gene }} ({{ map_units }})", classes="text-subtitle-2")
                html.Div(style=("`height: 14px; background: ${legend}`",))
                with html.Div(classes="d-flex justify-space-between text-caption"):
                    html.Span("{{ map_low }}")
                    html.Span("{{ map_high }}")
                v.VSlider(v_model=("opacity",), min=0, max=1, step=0.05, label="Opacity",
                          density="compact", hide_details=True,
                          raw_attrs=['data-testid="opacity"'])
            with html.Div(classes="d-flex ga-2"):
                for suffix in (".csv", ".tsv"):
                    v.VBtn(f"Table {suffix[1:].upper()}", size="small",
                           click=(f"utils.download('genes{suffix}', trigger('"
                                  f"{self._trigger(self.export_table)}', ['{suffix}']), "
                                  "'text/plain')"),
                           raw_attrs=[f'data-testid="export{suffix.replace(".", "-")}"'])
                v.VBtn("Map NRRD", size="small", disabled=("!gene",),
                       click=(f"utils.download(`${{gene}}.nrrd`, trigger('"
                              f"{self._trigger(self.export_map)}'), 'application/octet-stream')"),
                       raw_attrs=['data-testid="export-map"'])
            with html.Div(classes="d-flex ga-2"):
                v.VBtn("Export DICOM", size="small", click=self.export_dicom,
                       disabled=("busy",), prepend_icon="mdi-hospital-building",
                       raw_attrs=['data-testid="export-dicom"'])
                v.VBtn("DICOM zip", size="small", v_if="dicom_ready",
                       click=(f"utils.download('{hospital.DICOM_ZIP}', trigger('"
                              f"{self._trigger(self.dicom_zip)}'), 'application/zip')"),
                       raw_attrs=['data-testid="dicom-zip"'])
                v.VBtn("Send to PACS", size="small", v_if="dicom_ready && pacs",
                       click=self.send_to_pacs, disabled=("busy",),
                       raw_attrs=['data-testid="send-to-pacs"'])


def _cell(value):
    if isinstance(value, float):
        return None if value != value else round(value, 4)
    return value


def draw_map(run_folder: Path, gene: str) -> None:
    """Write one gene's map (NRRD) into the run's maps/ folder."""
    from RadioGenomicsLib.run import open_run, run_maps, write_maps

    run, bundle = open_run(run_folder / "run")
    write_maps(run_maps(run, bundle, [gene]), run_folder / "maps")


def support_centre(map_node) -> list[float]:
    """The RAS centre of the voxels that have a value (the tumour slices the model saw)."""
    import numpy as np

    k, j, i = np.argwhere(np.isfinite(mrml.array_kji(map_node))).mean(axis=0)
    return list((mrml.ijk_to_ras(map_node) @ np.array([i, j, k, 1.0]))[:3])


def tumour_choices(path: Path) -> list[dict]:
    """The labels of a labelmap, or the segments of a .seg.nrrd or a DICOM SEG, for the
    tumour choice."""
    from RadioGenomicsLib.imaging import is_dicom_seg

    if is_dicom_seg(path):
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True)
        labels = [str(s.SegmentLabel) for s in header.get("SegmentSequence", [])]
        return [{"title": label, "value": label} for label in labels]
    if path.name.lower().endswith(".seg.nrrd"):
        import slicerio

        segments = slicerio.read_segmentation(str(path), skip_voxels=True)["segments"]
        return [{"title": s.get("name", s["id"]), "value": s.get("name", s["id"])}
                for s in segments]
    import numpy as np
    import SimpleITK as sitk

    values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    labels = [int(x) for x in values if x != 0]
    choices = [{"title": "any non-zero label", "value": ""}] if len(labels) > 1 else []
    return choices + [{"title": f"label {x}", "value": str(x)} for x in labels]


def legend_gradient(color_node) -> str:
    """A CSS gradient of the map's colour table, low to high, as the slices draw it."""
    table = color_node.GetLookupTable()
    count = table.GetNumberOfTableValues()
    stops = []
    for step in range(9):
        r, g, b, _ = table.GetTableValue(round(step * (count - 1) / 8))
        stops.append(f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f}) {step * 12.5:.1f}%")
    return f"linear-gradient(to right, {', '.join(stops)})"


def main(args: argparse.Namespace) -> int:
    """`radiogenomics viewer`: serve until interrupted."""
    token = access_token(args.host, args.token)
    if args.pacs:  # bad credentials settings stop the start, in one line
        from RadioGenomicsLib.pacs import read_credentials

        read_credentials()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="radiogenomics-viewer-"))
    (work / "uploads").mkdir(parents=True, exist_ok=True)
    demo = Path(args.demo) if args.demo and Path(args.demo).is_dir() else None
    settings = Settings(models=[Path(p).resolve() for p in args.models],
                        studies=[Path(p).resolve() for p in args.study], work=work.resolve(),
                        upload_limit=args.upload_limit_mb * 2**20, demo=demo, pacs=args.pacs)
    if demo is not None:
        settings.roots.append(demo.resolve())
    # trame reads its own options from sys.argv: hand it only these (the token in a file,
    # not on a command line that `ps` shows)
    sys.argv = [sys.argv[0], "--host", args.host, "--port", str(args.port), "--server"]
    if token:
        key = work / ".token"
        key.write_text(token)
        key.chmod(0o600)
        sys.argv += ["--authKeyFile", str(key)]
    viewer = Viewer(settings)
    viewer.server.controller.on_server_ready.add(lambda **_: _announce(viewer, args.host, token))
    viewer.server.controller.on_server_ready.add(lambda **_: viewer.list_pacs_studies())
    viewer.server.controller.on_server_exited.add(lambda **_: viewer.cancel())  # no orphan
    try:
        viewer.server.start(open_browser=False, show_connection_info=False)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _announce(viewer: Viewer, host: str, token: str | None) -> None:
    port = viewer.server.port
    shown = ("127.0.0.1" if is_loopback(host)
             else socket.gethostname() if host in ("0.0.0.0", "::") else host)
    url = f"http://{shown}:{port}/" + (f"?secret={token}" if token else "")
    print(f"RadioGenomics viewer: open {url}", flush=True)
