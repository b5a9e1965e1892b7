"""RadioGenomics: predict a tumour's RNA-Seq expression profile from CT or MRI in 3D Slicer.

The module is thin: it writes the selected nodes to files, runs `radiogenomics` (the
bundled RadioGenomicsLib) in a background PythonSlicer process so the viewer never
freezes, and turns the gene table and gene maps it writes back into MRML nodes (the
glue is in RadioGenomicsLogic/mrml.py, tested with pytest against slicer-core).
"""

import csv
import json
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Annotated, Callable, Optional, Union

import qt
import vtk

import slicer
from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,
                    vtkMRMLTableNode)
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from RadioGenomicsLogic import mrml

# RadioGenomicsLib's dependencies with pyproject.toml's pins (a test keeps them equal),
# but for those Slicer ships (numpy, SimpleITK: never replaced) and torch (installed by
# the PyTorch extension for the user's GPU); psutil stops the process tree on Cancel.
REQUIREMENTS = (
    "scipy==1.17.1", "pandas==3.1.1", "pydicom==3.0.2", "nibabel==5.4.2", "pynrrd==1.1.3",
    "slicerio==1.4.0", "monai==1.6.1", "einops==0.8.2", "safetensors==0.8.0",
    "statsmodels==0.15.0", "scikit-learn==1.9.1", "matplotlib==3.11.2", "tqdm==4.70.1",
    "highdicom==0.28.2", "dicomweb-client==0.61.2",
)
MODULE_REQUIREMENTS = ("psutil>=5.9",)
KEPT_AS_INSTALLED = ("numpy", "SimpleITK", "torch")
MINIMUM_TORCH = "2.4"

MODELS_FOLDER_SETTING = "RadioGenomics/ModelsFolder"
MAP_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileViridis.txt"
MAP_OPACITY = 0.6
PROGRESS_LINE = re.compile(r"^PROGRESS (\d+)/(\d+|\?) (.*)$")  # RadioGenomicsLib/progress.py
ERROR_LINE = re.compile(r"^radiogenomics \w+: error: ")  # RadioGenomicsLib/cli/__init__.py


#
# Module
#


class RadioGenomics(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "RadioGenomics"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["RadioGenomics developers"]
        self.parent.helpText = (
            "Predict a tumour's RNA-Seq expression profile (a ranked gene table and gene maps) "
            "from CT or MRI and a tumour segmentation, with a TransUNet + HE2RNA model bundle. "
            "For research only: not for diagnosis. See the "
            '<a href="https://github.com/RadioGenomics/RadioGenomics/blob/main/RadioGenomics/README.md">'
            "module documentation</a>.")
        self.parent.acknowledgementText = (
            "Method after Farooq, Mishra and Chaudhury, \"Translating Imaging to Genomics: "
            "Leveraging Transformers for Predictive Modeling\"; background-process pattern after "
            "SlicerMONAIAuto3DSeg and SlicerTotalSegmentator.")


#
# Parameters (saved with the scene)
#


@parameterNodeWrapper
class RadioGenomicsParameterNode:
    model: str = ""  # bundle folder
    channelVolumes: dict[str, vtkMRMLScalarVolumeNode]  # channel name -> volume
    tumour: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None] = None
    segmentID: str = ""
    label: int = 0  # labelmap value of the tumour; 0: any non-zero
    brainMask: Optional[vtkMRMLLabelMapVolumeNode] = None
    device: Annotated[str, Choice(["auto", "cpu"])] = "auto"
    folds: Annotated[str, Choice(["all", "first"])] = "all"
    reliableOnly: bool = False
    search: str = ""
    resultsFolder: str = ""  # the last prediction's files: genes.csv, maps/
    results: Optional[vtkMRMLTableNode] = None  # every gene, as predicted
    resultsView: Optional[vtkMRMLTableNode] = None  # filtered, markers pinned
    geneMap: Optional[vtkMRMLScalarVolumeNode] = None  # the map on show


#
# Background process
#


def pythonSlicer() -> str:
    executable = shutil.which("PythonSlicer")
    if not executable:
        raise RuntimeError("PythonSlicer was not found next to the Slicer executable")
    return executable


def libraryFolder() -> str:
    """The folder that holds the bundled RadioGenomicsLib package."""
    import RadioGenomicsLib

    return str(Path(RadioGenomicsLib.__file__).resolve().parent.parent)


class BackgroundJob:
    """One `radiogenomics` command in a PythonSlicer process.

    A thread reads its output line by line; a QTimer hands the lines to the GUI thread,
    which parses progress and keeps the rest for the log and the error message.
    """

    POLL_MS = 200

    def __init__(self, arguments: list[str], onProgress: Callable[[int, int, str], None],
                 onDone: Callable[["BackgroundJob"], None]):
        self.arguments = arguments
        self.onProgress, self.onDone = onProgress, onDone
        self.output: list[str] = []
        self.cancelled = False
        self.returnCode: Optional[int] = None
        environment = {"PYTHONPATH": os.pathsep.join(filter(None, (libraryFolder(),
                                                                   os.environ.get("PYTHONPATH")))),
                       "RADIOGENOMICS_PROGRESS": "lines", "PYTHONUNBUFFERED": "1"}
        command = [pythonSlicer(), "-m", "RadioGenomicsLib", *arguments]
        logging.info("RadioGenomics: running %s", " ".join(command))
        self.process = slicer.util.launchConsoleProcess(command, updateEnvironment=environment)
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self.process.wait()
        self._lines.put(None)

    def _poll(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._timer.stop()
                self.returnCode = self.process.returncode
                self.onDone(self)
                return
            match = PROGRESS_LINE.match(line)
            if match:
                done, total, description = match.groups()
                self.onProgress(int(done), 0 if total == "?" else int(total), description)
            else:
                self.output.append(line)
                logging.info(line)

    @property
    def succeeded(self) -> bool:
        return self.returnCode == 0 and not self.cancelled

    def errorMessage(self) -> str:
        """The library's one-line error (exit code 2), or the last line of a crash."""
        if self.cancelled:
            return "Cancelled."
        for line in reversed(self.output):
            if ERROR_LINE.match(line):
                return ERROR_LINE.sub("", line)
        last = next((line for line in reversed(self.output) if line.strip()), "no output")
        return f"{last} (exit code {self.returnCode}; the full output is in the application log)"

    def cancel(self) -> None:
        """Stop the process and its children (PythonSlicer is a launcher: kill() alone
        would leave the Python process running)."""
        import psutil

        self.cancelled = True
        try:
            launcher = psutil.Process(self.process.pid)
            for child in launcher.children(recursive=True):
                child.kill()
            launcher.kill()
        except psutil.NoSuchProcess:
            pass

    def wait(self) -> None:
        """Block until the process ends and its output is handled (for tests and scripts)."""
        self._reader.join()
        self._poll()


#
# Widget
#


class RadioGenomicsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[RadioGenomicsLogic] = None
        self._parameterNode: Optional[RadioGenomicsParameterNode] = None
        self._parameterNodeGuiTag = None
        self._channelSelectors: dict[str, slicer.qMRMLNodeComboBox] = {}
        self._job: Optional[BackgroundJob] = None
        self._shownView: tuple = ()  # (results node, reliable only, search) on show

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RadioGenomics.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RadioGenomicsLogic()

        self.ui.modelsFolderPathLineEdit.currentPath = str(self.logic.modelsFolder())
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.addModelFolderButton.connect("clicked(bool)", self.onAddModelFolder)
        self.ui.addModelZipButton.connect("clicked(bool)", self.onAddModelZip)
        self.ui.modelsFolderPathLineEdit.connect("currentPathChanged(QString)", self.onModelsFolderChanged)
        self.ui.tumourSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onTumourChanged)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentChanged)
        self.ui.predictButton.connect("clicked(bool)", self.onPredictButton)
        self.ui.resultsTableView.connect("clicked(QModelIndex)", self.onGeneClicked)
        self.ui.showTableButton.connect("clicked(bool)", self.onShowTable)
        self.ui.exportTableButton.connect("clicked(bool)", self.onExportTable)
        self.ui.exportMapsButton.connect("clicked(bool)", self.onExportMaps)

        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self) -> None:
        if self._job:
            self._job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode: Optional[RadioGenomicsParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    # ------------------------------------------------------------ model

    def refreshModels(self, select: Optional[Path] = None) -> None:
        current = select or (Path(self._parameterNode.model) if self._parameterNode
                             and self._parameterNode.model else None)
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for bundle in self.logic.bundles():
            combo.addItem(bundle.name, str(bundle))
        combo.setCurrentIndex(combo.findData(str(current)) if current else 0)
        combo.blockSignals(wasBlocked)
        self.onModelChanged()

    def onModelsFolderChanged(self, path: str) -> None:
        self.logic.setModelsFolder(Path(path))
        self.refreshModels()

    def onAddModelFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, "Model bundle folder")
        if folder:
            self.addModel(Path(folder))

    def onAddModelZip(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, "Model bundle zip", "", "Zip archives (*.zip)")
        if path:
            self.addModel(Path(path))

    def addModel(self, source: Path) -> None:
        with slicer.util.tryWithErrorDisplay("Could not add the model bundle.", waitCursor=True):
            self.refreshModels(select=self.logic.addBundle(source))

    def onModelChanged(self, index: int = -1) -> None:
        if not self._parameterNode:
            return
        bundle = self.ui.modelComboBox.currentData or ""
        self._parameterNode.model = bundle
        self.ui.modelInfoText.plainText = ""
        channels: list[str] = []
        if bundle:
            try:
                channels = self.logic.bundleChannels(Path(bundle))
            except ValueError as error:
                self.ui.modelInfoText.plainText = str(error)
            else:
                self.showModelInfo(Path(bundle))
        self.rebuildChannelSelectors(channels)
        self.updateGUI()

    def showModelInfo(self, bundle: Path) -> None:
        """`radiogenomics info` (it checks every checksum: a background job)."""
        if not self.logic.dependenciesInstalled():
            self.ui.modelInfoText.plainText = (
                f"Channels: {', '.join(self.logic.bundleChannels(bundle))}\n"
                "The full model information appears once the Python packages are installed "
                "(on the first Predict).")
            return
        if self._job:  # never two jobs at once; the info shows after the next selection
            return

        def done(job: BackgroundJob) -> None:
            self._job = None
            self.ui.modelInfoText.plainText = ("\n".join(job.output) if job.succeeded
                                               else job.errorMessage())
            self.updateGUI()

        self._job = BackgroundJob(["info", str(bundle)], lambda *progress: None, done)

    def rebuildChannelSelectors(self, channels: list[str]) -> None:
        layout = self.ui.channelsFrame.layout()
        for selector in self._channelSelectors.values():
            layout.removeRow(selector)
        self._channelSelectors = {}
        chosen = self._parameterNode.channelVolumes if self._parameterNode else {}
        for channel in channels:
            selector = slicer.qMRMLNodeComboBox()
            selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
            selector.showChildNodeTypes = False
            selector.addEnabled = selector.removeEnabled = False
            selector.noneEnabled = True
            selector.setMRMLScene(slicer.mrmlScene)
            selector.setToolTip(f"The {channel} image of the study")
            selector.setCurrentNode(chosen.get(channel))
            selector.connect("currentNodeChanged(vtkMRMLNode*)",
                             lambda node, channel=channel: self.onChannelChanged(channel, node))
            layout.addRow(f"{channel}:", selector)
            self._channelSelectors[channel] = selector

    def onChannelChanged(self, channel: str, node) -> None:
        volumes = dict(self._parameterNode.channelVolumes)
        if node:
            volumes[channel] = node
        else:
            volumes.pop(channel, None)
        self._parameterNode.channelVolumes = volumes

    # ------------------------------------------------------------ tumour

    def onTumourChanged(self, node) -> None:
        isSegmentation = node is not None and node.IsA("vtkMRMLSegmentationNode")
        self.ui.segmentSelector.setCurrentNode(node if isSegmentation else None)
        if isSegmentation and self._parameterNode and self._parameterNode.segmentID:
            self.ui.segmentSelector.setCurrentSegmentID(self._parameterNode.segmentID)
        self.ui.segmentSelector.visible = isSegmentation
        self.ui.labelSpinBox.visible = node is not None and not isSegmentation
        self.ui.labelLabel.visible = self.ui.labelSpinBox.visible

    def onSegmentChanged(self, segmentID: str) -> None:
        if self._parameterNode:
            self._parameterNode.segmentID = segmentID or ""

    # ------------------------------------------------------------ predict

    def updateGUI(self, caller=None, event=None) -> None:
        if not self._parameterNode:
            return
        problem = self.logic.inputProblem(self._parameterNode, list(self._channelSelectors))
        running = self._job is not None
        self.ui.predictButton.text = "Cancel" if running else "Predict"
        self.ui.predictButton.enabled = running or problem is None
        self.ui.predictButton.toolTip = ("Stop the running job" if running
                                         else problem or "Predict the tumour's gene expression")
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.modelCollapsibleButton.enabled = not running
        hasResults = self._parameterNode.results is not None
        for widget in (self.ui.reliableOnlyCheckBox, self.ui.searchLineEdit,
                       self.ui.showTableButton, self.ui.exportTableButton):
            widget.enabled = hasResults
        self.ui.exportMapsButton.enabled = hasResults and bool(
            self.logic.mapFiles(self._parameterNode))
        shownView = (self._parameterNode.results, self._parameterNode.reliableOnly,
                     self._parameterNode.search)
        if hasResults and shownView != self._shownView:
            self.logic.updateResultsView(self._parameterNode)
        self._shownView = shownView
        if self.ui.resultsTableView.mrmlTableNode() is not self._parameterNode.resultsView:
            self.ui.resultsTableView.setMRMLTableNode(self._parameterNode.resultsView)

    def onPredictButton(self) -> None:
        if self._job:
            self._job.cancel()
            return
        self.ui.statusLabel.text = "Checking the Python packages..."
        slicer.app.processEvents()
        try:
            with slicer.util.tryWithErrorDisplay("Could not install the Python packages.",
                                                 waitCursor=True):
                self.logic.installDependencies()
        finally:
            self.ui.statusLabel.text = ""
        if not self.logic.dependenciesInstalled():
            return
        with slicer.util.tryWithErrorDisplay("Could not start the prediction.", waitCursor=True):
            self._job = self.logic.startPredict(self._parameterNode, self.onProgress,
                                                self.onPredictDone)
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.show()
            self.ui.statusLabel.text = "Starting..."
        self.updateGUI()

    def onProgress(self, done: int, total: int, description: str) -> None:
        self.ui.progressBar.setMaximum(max(total, 1))
        self.ui.progressBar.setValue(done)
        self.ui.statusLabel.text = description

    def onPredictDone(self, job: BackgroundJob) -> None:
        self._job = None
        self.ui.progressBar.hide()
        if job.succeeded:
            with slicer.util.tryWithErrorDisplay("Could not read the results.", waitCursor=True):
                self.logic.importResults(self._parameterNode)
                self.onShowTable()
                self.ui.statusLabel.text = (
                    f"{self._parameterNode.results.GetNumberOfRows()} genes predicted.")
        else:
            self.ui.statusLabel.text = job.errorMessage()
            if not job.cancelled:
                slicer.util.errorDisplay(job.errorMessage(), windowTitle="RadioGenomics")
        self.updateGUI()

    # ------------------------------------------------------------ results

    def onShowTable(self) -> None:
        view = self._parameterNode.resultsView
        if view is None:
            return
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(view.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    def onGeneClicked(self, index) -> None:
        view = self._parameterNode.resultsView
        model = self.ui.resultsTableView.model()
        if hasattr(model, "mapToSource"):  # the view sorts through a proxy model
            index = model.mapToSource(index)
        if view is None or not index.isValid():
            return
        gene = mrml.column_values(view, "gene_name")[index.row()]
        if self.logic.showGeneMap(self._parameterNode, gene):
            self.ui.statusLabel.text = f"Showing the map of {gene}."
            return
        if self._job:
            self.ui.statusLabel.text = f"{gene}: busy; select it again when the job is done."
            return

        def done(job: BackgroundJob) -> None:
            self._job = None
            self.ui.progressBar.hide()
            if job.succeeded and self.logic.showGeneMap(self._parameterNode, gene):
                self.ui.statusLabel.text = f"Showing the map of {gene}."
            else:
                self.ui.statusLabel.text = job.errorMessage()
            self.updateGUI()

        with slicer.util.tryWithErrorDisplay(f"Could not compute the map of {gene}."):
            self._job = self.logic.startMap(self._parameterNode, gene, self.onProgress, done)
            self.ui.progressBar.show()
            self.ui.statusLabel.text = f"Computing the map of {gene}..."
        self.updateGUI()

    def onExportTable(self) -> None:
        path = qt.QFileDialog.getSaveFileName(None, "Export the gene table", "genes.csv",
                                              "CSV (*.csv);;TSV (*.tsv)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not export the table.", waitCursor=True):
                mrml.write_gene_table(self._parameterNode.results, path)

    def onExportMaps(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, "Export the gene maps to")
        if folder:
            with slicer.util.tryWithErrorDisplay("Could not export the maps.", waitCursor=True):
                copied = self.logic.exportMaps(self._parameterNode, Path(folder))
                self.ui.statusLabel.text = f"{len(copied)} map(s) exported to {folder}."


#
# Logic
#


class RadioGenomicsLogic(ScriptedLoadableModuleLogic):
    """Everything the panel does, callable from scripts and tests without the widget."""

    def getParameterNode(self) -> RadioGenomicsParameterNode:
        return RadioGenomicsParameterNode(super().getParameterNode())

    # ------------------------------------------------------------ models folder

    def modelsFolder(self) -> Path:
        default = Path.home() / ".radiogenomics" / "models"
        return Path(slicer.util.settingsValue(MODELS_FOLDER_SETTING, str(default)))

    def setModelsFolder(self, folder: Path) -> None:
        qt.QSettings().setValue(MODELS_FOLDER_SETTING, str(folder))

    def bundles(self) -> list[Path]:
        folder = self.modelsFolder()
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if (p / "metadata.json").is_file())

    def addBundle(self, source: Path) -> Path:
        """Copy a bundle folder, or unpack a bundle zip, into the models folder.

        For sites without internet: the bundle arrives on a disk or by mail. The library
        checks it (format, checksums) when it is used.
        """
        with tempfile.TemporaryDirectory() as unpacked:
            if source.is_file() and zipfile.is_zipfile(source):
                with zipfile.ZipFile(source) as archive:
                    archive.extractall(unpacked)
                found = [p.parent for p in Path(unpacked).rglob("metadata.json")]
            else:
                found = [source] if (source / "metadata.json").is_file() else []
            if len(found) != 1:
                raise ValueError(f"{source}: expected one model bundle (a folder with "
                                 f"metadata.json), found {len(found)}")
            name = source.stem if found[0] == Path(unpacked) else found[0].name
            target = self.modelsFolder() / name
            if target.exists():
                raise ValueError(f"{target}: a model of this name is already installed")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(found[0], target)
        return target

    def bundleMetadata(self, bundle: Path) -> dict:
        """metadata.json of a bundle, read without the library (whose packages may not be
        installed yet); the library checks the whole bundle when it uses it."""
        try:
            metadata = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
            if not isinstance(metadata["channels"], list) or not isinstance(metadata["target"], dict):
                raise TypeError("channels must be a list, target an object")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{bundle}: not a readable model bundle ({error})") from None
        return metadata

    def bundleChannels(self, bundle: Path) -> list[str]:
        """The image channels a bundle needs, in its order."""
        return [str(channel) for channel in self.bundleMetadata(bundle)["channels"]]

    def tableUnits(self, bundle: Path) -> dict[str, str]:
        """Units of the gene table's columns: the bundle's target for the predicted values."""
        from RadioGenomicsLib.genetable import column_units

        target = self.bundleMetadata(bundle)["target"]
        return column_units(target.get("transform", "?"), target.get("units", "?"))

    def bundleGenes(self, bundle: Path) -> set[str]:
        """Gene symbols of a bundle (`gene_name` in genes.tsv)."""
        with open(bundle / "genes.tsv", newline="", encoding="utf-8") as file:
            return {row["gene_name"] for row in csv.DictReader(file, delimiter="\t")}

    # ------------------------------------------------------------ dependencies

    def dependenciesInstalled(self) -> bool:
        import importlib.metadata

        names = [re.split(r"[=<>]", r)[0] for r in (*REQUIREMENTS, *MODULE_REQUIREMENTS)]
        try:
            for name in (*names, "torch"):
                importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def installDependencies(self, askConfirmation: bool = True) -> None:
        """PyTorch through the PyTorch extension, the rest with pip, never replacing what
        Slicer ships: only missing packages are installed, numpy/SimpleITK/torch pinned
        to the installed versions by a constraints file."""
        import importlib.metadata

        if self.dependenciesInstalled():
            return
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError("RadioGenomics needs the PyTorch extension: install it from the "
                               "Extensions Manager, restart Slicer, then Predict again") from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if torchLogic.installTorch(askConfirmation=askConfirmation,
                                       torchVersionRequirement=f">={MINIMUM_TORCH}") is None:
                raise RuntimeError("PyTorch was not installed")
        missing = []
        for requirement in (*REQUIREMENTS, *MODULE_REQUIREMENTS):
            try:
                importlib.metadata.version(re.split(r"[=<>]", requirement)[0])
            except importlib.metadata.PackageNotFoundError:
                missing.append(requirement)
        if not missing:
            return
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                "RadioGenomics needs these Python packages (once, a few minutes):\n"
                + "\n".join(missing), windowTitle="RadioGenomics"):
            raise RuntimeError("the Python packages were not installed")
        with tempfile.TemporaryDirectory() as folder:
            constraints = Path(folder) / "constraints.txt"
            constraints.write_text("".join(f"{name}=={importlib.metadata.version(name)}\n"
                                           for name in KEPT_AS_INSTALLED))
            slicer.util.pip_install([*missing, "-c", str(constraints)])

    # ------------------------------------------------------------ predict

    def inputProblem(self, parameters: RadioGenomicsParameterNode,
                     channels: list[str]) -> Optional[str]:
        """Why Predict cannot run yet, or None."""
        if not parameters.model:
            return "Choose a model bundle (add one from a folder or a zip)."
        missing = [c for c in channels if parameters.channelVolumes.get(c) is None]
        if missing:
            return f"Choose the {', '.join(missing)} volume(s)."
        if parameters.tumour is None:
            return "Choose the tumour segmentation or labelmap."
        if parameters.tumour.IsA("vtkMRMLSegmentationNode") and not parameters.segmentID:
            return "Choose the tumour segment."
        return None

    def _inputArguments(self, parameters: RadioGenomicsParameterNode, folder: Path) -> list[str]:
        """Write the selected nodes to files in `folder`; the matching command arguments."""
        folder.mkdir(parents=True, exist_ok=True)
        channels = self.bundleChannels(Path(parameters.model))
        arguments = ["--model", parameters.model]
        for channel in channels:
            path = folder / f"{channel}.nrrd"
            mrml.write_volume(parameters.channelVolumes[channel], path)
            arguments += ["--image", f"{channel}={path}"]
        tumourPath = folder / "tumour.nrrd"
        if parameters.tumour.IsA("vtkMRMLSegmentationNode"):
            reference = parameters.channelVolumes[channels[0]]
            mrml.write_segment(parameters.tumour, parameters.segmentID, reference, tumourPath)
        else:
            mrml.write_volume(parameters.tumour, tumourPath)
            if parameters.label:
                arguments += ["--label", str(parameters.label)]
        arguments += ["--segmentation", str(tumourPath)]
        if parameters.brainMask is not None:
            mrml.write_volume(parameters.brainMask, folder / "brain_mask.nrrd")
            arguments += ["--brain-mask", str(folder / "brain_mask.nrrd")]
        return arguments + ["--device", parameters.device, "--folds", parameters.folds]

    def startPredict(self, parameters: RadioGenomicsParameterNode,
                     onProgress: Callable[[int, int, str], None],
                     onDone: Callable[[BackgroundJob], None]) -> BackgroundJob:
        """Predict in the background: genes.csv and the marker genes' maps in a new folder."""
        folder = Path(tempfile.mkdtemp(prefix="RadioGenomics-", dir=slicer.app.temporaryPath))
        parameters.resultsFolder = str(folder)
        markers = [g for g in self.markerGenes() if g in self.bundleGenes(Path(parameters.model))]
        arguments = ["predict", *self._inputArguments(parameters, folder / "inputs"),
                     "--out", str(folder / "genes.csv"), "--maps", str(folder / "maps"),
                     "--map-format", "nrrd"]
        for gene in markers:
            arguments += ["--map-gene", gene]
        return BackgroundJob(arguments, onProgress, onDone)

    def startMap(self, parameters: RadioGenomicsParameterNode, gene: str,
                 onProgress: Callable[[int, int, str], None],
                 onDone: Callable[[BackgroundJob], None]) -> BackgroundJob:
        """One more gene's map, from the inputs the prediction wrote."""
        folder = Path(parameters.resultsFolder)
        run = Path(tempfile.mkdtemp(prefix=f"map-{gene}-", dir=folder))
        arguments = ["predict", *self._inputArguments(parameters, folder / "inputs"),
                     "--out", str(run / "genes.csv"), "--maps", str(folder / "maps"),
                     "--map-format", "nrrd", "--map-gene", gene]
        return BackgroundJob(arguments, onProgress, onDone)

    @staticmethod
    def markerGenes() -> tuple[str, ...]:
        from RadioGenomicsLib.genetable import MARKER_GENES

        return MARKER_GENES

    def importResults(self, parameters: RadioGenomicsParameterNode) -> vtkMRMLTableNode:
        """The prediction's gene table as a table node, and a filtered view of it."""
        for old in (parameters.results, parameters.resultsView):
            if old is not None:
                slicer.mrmlScene.RemoveNode(old)
        table = mrml.read_gene_table(slicer.mrmlScene, Path(parameters.resultsFolder) / "genes.csv",
                                     slicer.mrmlScene.GenerateUniqueName("RadioGenomics genes"),
                                     self.tableUnits(Path(parameters.model)))
        parameters.results = table
        parameters.resultsView = slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLTableNode", f"{table.GetName()} (shown)")
        self.updateResultsView(parameters)
        return table

    def updateResultsView(self, parameters: RadioGenomicsParameterNode) -> None:
        rows = mrml.display_rows(parameters.results, self.markerGenes(),
                                 parameters.reliableOnly, parameters.search)
        mrml.copy_rows(parameters.results, parameters.resultsView, rows)

    # ------------------------------------------------------------ maps

    def mapFiles(self, parameters: RadioGenomicsParameterNode) -> list[Path]:
        maps = Path(parameters.resultsFolder) / "maps" if parameters.resultsFolder else None
        return sorted(p for p in maps.iterdir() if p.is_file()) if maps and maps.is_dir() else []

    def mapFile(self, parameters: RadioGenomicsParameterNode, gene: str) -> Optional[Path]:
        """The map the predictor wrote for a gene (the module asks for NRRD maps)."""
        from RadioGenomicsLib.predict import map_file_name

        path = Path(parameters.resultsFolder) / "maps" / map_file_name(gene, ".nrrd")
        return path if parameters.resultsFolder and path.is_file() else None

    def showGeneMap(self, parameters: RadioGenomicsParameterNode,
                    gene: str) -> Optional[vtkMRMLScalarVolumeNode]:
        """Show a gene's map over the study (foreground, colour map and legend); None when
        that map has not been computed yet."""
        path = self.mapFile(parameters, gene)
        if path is None:
            return None
        if parameters.geneMap is not None:
            slicer.mrmlScene.RemoveNode(parameters.geneMap)
        node = mrml.load_volume(slicer.mrmlScene, path, f"{gene} map")
        mrml.show_as_map(node, MAP_COLOR_NODE_ID)
        slicer.modules.colors.logic().AddDefaultColorLegendDisplayNode(node)
        background = next(iter(parameters.channelVolumes.values()), None)
        slicer.util.setSliceViewerLayers(background=background, foreground=node,
                                         foregroundOpacity=MAP_OPACITY)
        parameters.geneMap = node
        return node

    def exportMaps(self, parameters: RadioGenomicsParameterNode, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy2(path, folder / path.name)) for path in self.mapFiles(parameters)]


#
# Test
#


class RadioGenomicsTest(ScriptedLoadableModuleTest):
    """The whole flow in Slicer, on a synthetic CT study and an untrained bundle it makes."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PredictShowExport()

    def makeStudy(self):
        """A 48 x 48 x 24 CT with a bright sphere, and the sphere as a segment."""
        import numpy as np

        k, j, i = np.mgrid[:24, :48, :48]
        sphere = ((i - 24) ** 2 + (j - 22) ** 2 + ((k - 12) * 2.5) ** 2) < 9 ** 2
        rng = np.random.default_rng(0)
        ct = np.where(sphere, 60.0, 20.0) + rng.normal(0, 5, sphere.shape)
        ct[:, :, :4] = -1000.0  # air beside the body
        ijkToRAS = np.array([[-0.9, 0, 0, 20], [0, -0.9, 0, 15], [0, 0, 2.5, -30], [0, 0, 0, 1]])
        volume = slicer.util.addVolumeFromArray(ct.astype(np.float32), ijkToRAS, "synthetic CT")
        labels = slicer.util.addVolumeFromArray(sphere.astype(np.uint8), ijkToRAS, "sphere",
                                                "vtkMRMLLabelMapVolumeNode")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "tumour")
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labels, segmentation)
        return volume, segmentation, segmentation.GetSegmentation().GetNthSegmentID(0)

    def makeBundle(self, folder: Path) -> Path:
        import pandas as pd

        from RadioGenomicsLib.bundle import make_untrained_bundle
        from RadioGenomicsLib.model import ModelConfig
        from RadioGenomicsLib.preprocess import PreprocessSettings

        genes = pd.DataFrame({"gene_name": ["GAPDH", "EGFR", "MYC", "KRAS", "ACTB", "TP53"]})
        genes["gene_id"] = [f"ENSG{n:011d}.1" for n in range(len(genes))]
        genes["validation_r"] = [0.1, 0.5, 0.0, 0.4, 0.2, 0.05]
        genes["validation_p_adj"] = [0.9, 0.001, 1.0, 0.01, 0.5, 1.0]
        path = folder / "untrained-ct"
        make_untrained_bundle(path, ModelConfig.preset("small"), ["ct"], genes,
                              PreprocessSettings().to_dict())
        return path

    def test_PredictShowExport(self):
        import numpy as np

        logic = RadioGenomicsLogic()
        self.delayDisplay("Installing the Python packages if needed")
        logic.installDependencies(askConfirmation=False)
        models = Path(tempfile.mkdtemp(prefix="RadioGenomicsTest-"))
        previousFolder = logic.modelsFolder()
        logic.setModelsFolder(models / "models")
        try:
            self.delayDisplay("Making a synthetic study and an untrained bundle")
            volume, segmentation, segmentID = self.makeStudy()
            bundle = logic.addBundle(self.makeBundle(models))
            self.assertEqual(logic.bundles(), [bundle])
            self.assertEqual(logic.bundleChannels(bundle), ["ct"])

            parameters = logic.getParameterNode()
            parameters.model = str(bundle)
            parameters.channelVolumes = {"ct": volume}
            parameters.tumour = segmentation
            parameters.segmentID = segmentID
            parameters.device = "cpu"
            self.assertIsNone(logic.inputProblem(parameters, ["ct"]))

            self.delayDisplay("Predicting in the background")
            progress = []
            job = logic.startPredict(parameters, lambda *p: progress.append(p), lambda job: None)
            job.wait()
            self.assertTrue(job.succeeded, job.errorMessage())
            self.assertTrue(progress, "no PROGRESS line was parsed")

            table = logic.importResults(parameters)
            self.assertEqual(table.GetNumberOfRows(), 6)
            self.assertEqual(table.GetTable().GetColumnByName("rank").GetClassName(), "vtkIntArray")
            self.assertTrue(table.GetColumnUnitLabel("predicted"))
            shown = mrml.column_values(parameters.resultsView, "gene_name")
            self.assertEqual(shown[:3], ["EGFR", "KRAS", "TP53"])  # markers, in the pinned order

            self.delayDisplay("Showing the EGFR map")
            geneMap = logic.showGeneMap(parameters, "EGFR")
            self.assertIsNotNone(geneMap)
            np.testing.assert_allclose(mrml.ijk_to_ras(geneMap), mrml.ijk_to_ras(volume), atol=1e-4)
            self.assertEqual(geneMap.GetImageData().GetDimensions(),
                             volume.GetImageData().GetDimensions())
            self.assertEqual(geneMap.GetDisplayNode().GetApplyThreshold(), 1)
            self.assertIsNone(logic.showGeneMap(parameters, "MYC"))  # not a marker: on demand

            self.delayDisplay("Exporting the table and the maps")
            exported = models / "export" / "genes.tsv"
            mrml.write_gene_table(table, exported)
            again = mrml.read_gene_table(slicer.mrmlScene, exported, "again")
            self.assertEqual(mrml.column_values(again, "gene_name"),
                             mrml.column_values(table, "gene_name"))
            copied = logic.exportMaps(parameters, models / "export" / "maps")
            self.assertEqual(sorted(p.name.split(".")[0] for p in copied), ["EGFR", "KRAS", "TP53"])
            self.delayDisplay("Test passed")
        finally:
            logic.setModelsFolder(previousFolder)
            shutil.rmtree(models, ignore_errors=True)
