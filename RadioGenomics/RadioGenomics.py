"""RadioGenomics: predict a tumour's RNA-Seq expression profile from CT or MRI in 3D Slicer.

The module is thin: it writes the selected nodes to files, runs `radiogenomics predict`
(the bundled RadioGenomicsLib) in a background PythonSlicer process so the viewer never
freezes, and shows the prediction run it writes: the gene table as table nodes, and any
gene's map, drawn in-process from the run's saved token embeddings in well under a
second (the glue is in RadioGenomicsLogic/, tested with pytest against slicer-core).
"""

import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Callable, Optional, Union

import qt
import vtk

import slicer
from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,
                    vtkMRMLTableNode)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from RadioGenomicsLogic.library import child_environment, ensure_library

# before anything imports RadioGenomicsLib: the module folder alone may be on the path
LIBRARY_FOLDER = ensure_library(Path(__file__).resolve().parent)

from RadioGenomicsLogic import mrml  # noqa: E402  (imports RadioGenomicsLib)
from RadioGenomicsLogic.jobs import (JobRecord, OutputReader, error_message,  # noqa: E402
                                     predict_arguments)
from RadioGenomicsLogic.sample import (default_models_folder, demo_folder,  # noqa: E402
                                        help_text, read_sample, sample_arguments)
from RadioGenomicsLogic.requirements import (  # noqa: E402
    MINIMUM_SLICER, WHEELS_VARIABLE, constraints_text, missing_requirements, pip_arguments,
    requirements_file, runtime_text, torch_problem)

MODELS_FOLDER_SETTING = "RadioGenomics/ModelsFolder"
MAP_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileViridis.txt"
MAP_OPACITY = 0.6


#
# Module
#


class RadioGenomics(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RadioGenomics")
        self.parent.categories = [_("Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["RadioGenomics developers"]
        self.parent.helpText = _(
            "Predict a tumour's RNA-Seq expression profile (a ranked gene table and gene maps) "
            "from CT or MRI and a tumour segmentation, with a TransUNet + HE2RNA model bundle. "
            "For research only: not for diagnosis. Needs Slicer {version} or later. See the "
            '<a href="https://github.com/RadioGenomics/RadioGenomics/blob/main/RadioGenomics/README.md">'
            "module documentation</a>.").format(version=".".join(map(str, MINIMUM_SLICER)))
        self.parent.acknowledgementText = _(
            "Method after Farooq, Mishra and Chaudhury, \"Translating Imaging to Genomics: "
            "Leveraging Transformers for Predictive Modeling\"; background-process pattern after "
            "SlicerMONAIAuto3DSeg and SlicerTotalSegmentator.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The module's sample in Slicer's Sample Data module too: its button opens this
    module and loads the sample there (the library makes it: nothing is downloaded)."""
    try:
        import SampleData
    except ImportError:  # a Slicer without the Sample Data module
        return

    def load(source) -> None:
        slicer.util.selectModule("RadioGenomics")
        slicer.modules.radiogenomics.widgetRepresentation().self().onLoadSample()

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="RadioGenomics", sampleName=_("RadioGenomics synthetic study"), uris=[],
        fileNames=[], nodeNames=[], customDownloader=load,
        thumbnailFileName=str(Path(__file__).resolve().parent / "Resources" / "Icons" / "RadioGenomics.png"))


def slicerTooOld() -> Optional[str]:
    """Why this Slicer cannot run the module, or None."""
    version = (slicer.app.majorVersion, slicer.app.minorVersion)
    if version < MINIMUM_SLICER:
        return _("RadioGenomics needs Slicer {needed} or later (this is {found}).").format(
            needed=".".join(map(str, MINIMUM_SLICER)), found=".".join(map(str, version)))
    return None


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
    # the results on show and what made them (from the job's start record, not from the
    # selections above, which may have changed since)
    runFolder: str = ""  # the prediction run: genes.csv, tokens, maps/
    resultsModel: str = ""  # the bundle that made the run
    resultsMarkers: str = ""  # its marker genes, comma-separated (pinned on top)
    resultsVolume: Optional[vtkMRMLScalarVolumeNode] = None  # the background of the maps
    results: Optional[vtkMRMLTableNode] = None  # every gene, as predicted
    resultsView: Optional[vtkMRMLTableNode] = None  # filtered, markers pinned
    geneMap: Optional[vtkMRMLScalarVolumeNode] = None  # the map on show


#
# Background process
#


def pythonSlicer() -> str:
    executable = shutil.which("PythonSlicer")
    if not executable:
        raise RuntimeError(_("PythonSlicer was not found next to the Slicer executable"))
    return executable


class BackgroundJob:
    """One `radiogenomics` command in a PythonSlicer process, with the record of what it
    was started for. A thread reads its output (RadioGenomicsLogic.jobs); a QTimer hands
    progress and lines to the GUI thread."""

    POLL_MS = 200

    def __init__(self, arguments: list[str], record: Optional[JobRecord],
                 onProgress: Callable[[int, int, str], None],
                 onDone: Callable[["BackgroundJob"], None], module: str = "RadioGenomicsLib"):
        self.arguments, self.record = arguments, record
        self.onProgress, self.onDone = onProgress, onDone
        self.output: list[str] = []
        self.cancelled = False
        self.returnCode: Optional[int] = None
        environment = {**child_environment(LIBRARY_FOLDER),  # the same library as here
                       "RADIOGENOMICS_PROGRESS": "lines", "PYTHONUNBUFFERED": "1",
                       "PYTHONIOENCODING": "utf-8"}
        command = [pythonSlicer(), "-m", module, *arguments]
        logging.info("RadioGenomics: running %s", " ".join(command))
        self.process = slicer.util.launchConsoleProcess(command, updateEnvironment=environment)
        self._reader = OutputReader(self.process)
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _poll(self) -> None:
        for event in self._reader.poll():
            if event[0] == "progress":
                self.onProgress(*event[1:])
            elif event[0] == "text":
                self.output.append(event[1])
                logging.info(event[1])
            else:
                self._timer.stop()
                self.returnCode = event[1]
                self.onDone(self)

    @property
    def succeeded(self) -> bool:
        return self.returnCode == 0 and not self.cancelled

    def errorMessage(self) -> str:
        return _("Cancelled.") if self.cancelled else error_message(self.output, self.returnCode)

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
        self._job: Optional[BackgroundJob] = None  # the one prediction that may run
        self._exportJob: Optional[BackgroundJob] = None  # a DICOM export, beside it
        self._sampleJob: Optional[BackgroundJob] = None  # making the sample
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
        self.ui.sampleHelpLabel.text = help_text(self.logic.demoFolder())

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
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
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)

        self.initializeParameterNode()
        self.refreshModels()
        problem = slicerTooOld()
        if problem:
            self.ui.statusLabel.text = problem

    def cleanup(self) -> None:
        if self._job:
            self._job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # as Slicer's template: stop updating the GUI, keep the parameter node (a running
        # job imports its results into the scene's parameter node when it ends)
        self.disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        if self._job:  # its inputs are going away
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def disconnectParameterNode(self) -> None:
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)

    def setParameterNode(self, parameterNode: Optional[RadioGenomicsParameterNode]) -> None:
        self.disconnectParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    # ------------------------------------------------------------ sample

    def onLoadSample(self) -> None:
        """The sample (a synthetic study and a bundle) made by the library in the
        background, then loaded and selected."""
        demo = self.logic.demoFolder()
        folder = Path(slicer.app.temporaryPath) / ("RadioGenomics-sample" + ("-demo" if demo else ""))
        if (folder / "sample.json").is_file():
            return self.showSample(folder)
        torchReason = None if demo else _("the untrained sample bundle is made with PyTorch")
        with slicer.util.tryWithErrorDisplay(_("Could not install the Python packages."),
                                             waitCursor=True):
            self.logic.installDependencies(torchReason=torchReason)
        if not self.logic.dependenciesInstalled(withTorch=torchReason is not None):
            return

        def done(job: BackgroundJob) -> None:
            self._sampleJob = None
            self.ui.loadSampleButton.enabled = True
            if job.succeeded:
                self.showSample(folder)
            else:
                self.ui.statusLabel.text = job.errorMessage()

        with slicer.util.tryWithErrorDisplay(_("Could not make the sample."), waitCursor=True):
            self._sampleJob = BackgroundJob(sample_arguments(folder, demo), None,
                                            lambda *progress: None, done, module="RadioGenomicsLib.demo")
            self.ui.loadSampleButton.enabled = False
            self.ui.statusLabel.text = _("Making the sample (seconds)...")

    def showSample(self, folder: Path) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample."), waitCursor=True):
            sample = self.logic.loadSample(folder, self._parameterNode)
            self.refreshModels(select=Path(self._parameterNode.model))
            self.onTumourChanged(self._parameterNode.tumour)
            self.ui.statusLabel.text = sample["label"]

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
        folder = qt.QFileDialog.getExistingDirectory(None, _("Model bundle folder"))
        if folder:
            self.addModel(Path(folder))

    def onAddModelZip(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("Model bundle zip"), "",
                                              _("Zip archives (*.zip)"))
        if path:
            self.addModel(Path(path))

    def addModel(self, source: Path) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not add the model bundle."), waitCursor=True):
            self.refreshModels(select=self.logic.addBundle(source))

    def onModelChanged(self, index: int = -1) -> None:
        """The bundle's card, read in-process (standard library only: no job, no packages)."""
        if not self._parameterNode:
            return
        bundle = self.ui.modelComboBox.currentData or ""
        self._parameterNode.model = bundle
        channels: list[str] = []
        self.ui.modelInfoText.plainText = ""
        if bundle:
            try:
                card = self.logic.bundleCard(Path(bundle))
            except ValueError as error:
                self.ui.modelInfoText.plainText = str(error)
            else:
                channels = list(card.channels)
                runtime = runtime_text(self.logic.torchProblem(Path(bundle), self._parameterNode.folds))
                self.ui.modelInfoText.plainText = self.logic.cardText(card) + "\n\n" + runtime
        self.rebuildChannelSelectors(channels)
        self.updateGUI()

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
            selector.setToolTip(_("The {channel} image of the study").format(channel=channel))
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
        problem = slicerTooOld() or self.logic.inputProblem(self._parameterNode,
                                                            list(self._channelSelectors))
        running = self._job is not None
        self.ui.predictButton.text = _("Cancel") if running else _("Predict")
        self.ui.predictButton.enabled = running or problem is None
        self.ui.predictButton.toolTip = (_("Stop the running prediction") if running
                                         else problem or _("Predict the tumour's gene expression"))
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.modelCollapsibleButton.enabled = not running
        hasResults = self._parameterNode.results is not None
        # the results are the finished run's: browsing, maps and export never wait on a job
        for widget in (self.ui.reliableOnlyCheckBox, self.ui.searchLineEdit,
                       self.ui.showTableButton, self.ui.exportTableButton):
            widget.enabled = hasResults
        self.ui.exportMapsButton.enabled = hasResults and bool(
            self.logic.mapFiles(self._parameterNode.runFolder))
        self.ui.exportDicomButton.enabled = hasResults and self._exportJob is None
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
        parameters = self._parameterNode
        self.ui.statusLabel.text = _("Checking the Python packages...")
        slicer.app.processEvents()
        torchReason = None
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not install the Python packages."),
                                                 waitCursor=True):
                torchReason = self.logic.torchProblem(Path(parameters.model), parameters.folds)
                self.logic.installDependencies(torchReason=torchReason)
        finally:
            self.ui.statusLabel.text = ""
        if not self.logic.dependenciesInstalled(withTorch=torchReason is not None):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the prediction."), waitCursor=True):
            self._job = self.logic.startPredict(
                Path(parameters.model), dict(parameters.channelVolumes), parameters.tumour,
                segmentID=parameters.segmentID, label=parameters.label,
                brainMask=parameters.brainMask, device=parameters.device, folds=parameters.folds,
                onProgress=self.onProgress, onDone=self.onPredictDone)
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.show()
            self.ui.statusLabel.text = _("Starting...")
        self.updateGUI()

    def onProgress(self, done: int, total: int, description: str) -> None:
        self.ui.progressBar.setMaximum(max(total, 1))
        self.ui.progressBar.setValue(done)
        self.ui.statusLabel.text = description

    def onPredictDone(self, job: BackgroundJob) -> None:
        """Import the run the job wrote, from the job's own record, into the scene's
        parameter node (the widget may have left the module or changed inputs since)."""
        self._job = None
        self.ui.progressBar.hide()
        if job.succeeded:
            with slicer.util.tryWithErrorDisplay(_("Could not read the results."), waitCursor=True):
                parameters = self.logic.getParameterNode()
                self.logic.importResults(job.record, parameters)
                self.ui.statusLabel.text = _("{count} genes predicted.").format(
                    count=parameters.results.GetNumberOfRows())
                if self.parent.isEntered:
                    self.onShowTable()
        else:
            self.ui.statusLabel.text = job.errorMessage()
            if not job.cancelled:
                slicer.util.errorDisplay(job.errorMessage(), windowTitle="RadioGenomics")
        self.updateGUI()

    # ------------------------------------------------------------ results

    def onShowTable(self) -> None:
        view = self._parameterNode.resultsView if self._parameterNode else None
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
        gene = mrml.column_values(view, "gene_name")[index.row()] or \
            mrml.column_values(view, "gene_id")[index.row()]
        with slicer.util.tryWithErrorDisplay(_("Could not show the map of {gene}.").format(gene=gene),
                                             waitCursor=True):
            self.logic.showGeneMap(self._parameterNode, gene)
            self.ui.statusLabel.text = _("Showing the map of {gene}.").format(gene=gene)
        self.updateGUI()

    def onExportTable(self) -> None:
        path = qt.QFileDialog.getSaveFileName(None, _("Export the gene table"), "genes.csv",
                                              _("CSV (*.csv);;TSV (*.tsv)"))
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not export the table."), waitCursor=True):
                mrml.write_gene_table(self._parameterNode.results, path)

    def onExportDicom(self) -> None:
        """The run's results as DICOM objects, in a background job (seconds to a minute)."""
        folder = qt.QFileDialog.getExistingDirectory(None, _("Export DICOM results to a new folder"))
        if not folder:
            return
        parameters = self._parameterNode
        gene = parameters.geneMap.GetName().removesuffix(" map") if parameters.geneMap else ""

        def done(job: BackgroundJob) -> None:
            self._exportJob = None
            self.ui.statusLabel.text = (_("DICOM results written to {folder}.").format(folder=folder)
                                        if job.succeeded else job.errorMessage())
            self.updateGUI()

        out = Path(folder) / "RadioGenomics-DICOM"
        with slicer.util.tryWithErrorDisplay(_("Could not start the DICOM export."), waitCursor=True):
            self._exportJob = self.logic.startExportDicom(parameters.runFolder,
                                                          parameters.resultsModel, out,
                                                          [gene] if gene else [], done)
            self.ui.statusLabel.text = _("Writing the DICOM results...")
        self.updateGUI()

    def onExportMaps(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, _("Export the gene maps to"))
        if folder:
            with slicer.util.tryWithErrorDisplay(_("Could not export the maps."), waitCursor=True):
                copied = self.logic.exportMaps(self._parameterNode.runFolder, Path(folder))
                self.ui.statusLabel.text = _("{count} map(s) exported to {folder}.").format(
                    count=len(copied), folder=folder)


#
# Logic
#


class RadioGenomicsLogic(ScriptedLoadableModuleLogic):
    """Everything the panel does, callable from Slicer's Python console and from tests
    without the widget: every method takes what it works on as arguments."""

    def getParameterNode(self) -> RadioGenomicsParameterNode:
        return RadioGenomicsParameterNode(super().getParameterNode())

    # ------------------------------------------------------------ models folder

    @staticmethod
    def demoFolder() -> Optional[Path]:
        """The output of `make demo` in the checkout the module runs from, if any."""
        return demo_folder(LIBRARY_FOLDER)

    def modelsFolder(self) -> Path:
        default = default_models_folder(self.demoFolder(), Path.home())
        return Path(slicer.util.settingsValue(MODELS_FOLDER_SETTING, str(default)))

    def loadSample(self, folder: Path, parameters: RadioGenomicsParameterNode) -> dict:
        """Load the sample the library wrote in `folder` (sample.json) into the scene and
        choose it in `parameters`: its volumes, its tumour labelmap, its bundle (added to
        the models folder unless it is there already)."""
        sample = read_sample(folder)
        volumes = {channel: slicer.util.loadVolume(path, {"name": f"sample {channel}"})
                   for channel, path in sample["images"].items()}
        tumour = slicer.util.loadLabelVolume(sample["segmentation"], {"name": "sample tumour"})
        bundle = Path(sample["bundle"])
        if bundle.parent != self.modelsFolder():
            installed = self.modelsFolder() / bundle.name
            bundle = installed if (installed / "metadata.json").is_file() else self.addBundle(bundle)
        parameters.channelVolumes, parameters.tumour, parameters.label = volumes, tumour, 0
        parameters.model = str(bundle)
        slicer.util.setSliceViewerLayers(background=next(iter(volumes.values())), fit=True)
        return sample

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
                raise ValueError(_("{source}: expected one model bundle (a folder with "
                                   "metadata.json), found {count}").format(source=source,
                                                                          count=len(found)))
            name = source.stem if found[0] == Path(unpacked) else found[0].name
            target = self.modelsFolder() / name
            if target.exists():
                raise ValueError(_("{target}: a model of this name is already installed").format(
                    target=target))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(found[0], target)
        return target

    def bundleCard(self, bundle: Path):
        """The bundle's card (RadioGenomicsLib.card: standard library only, so it works
        before the packages are installed); ValueError with the library's message."""
        from RadioGenomicsLib.card import read_card
        from RadioGenomicsLib.errors import InputError

        try:
            return read_card(bundle)
        except InputError as error:
            raise ValueError(str(error)) from None

    @staticmethod
    def cardText(card) -> str:
        from RadioGenomicsLib.card import card_text

        return card_text(card, width=60)

    # ------------------------------------------------------------ dependencies

    def torchProblem(self, bundle: Path, folds: str = "all") -> Optional[str]:
        """Why this bundle needs PyTorch, or None: its exported fold models predict on
        ONNX Runtime (`--runtime auto`), and PyTorch is needed only to train."""
        from RadioGenomicsLib.card import read_metadata
        from RadioGenomicsLib.errors import InputError

        try:
            return torch_problem(read_metadata(bundle), folds)
        except InputError as error:
            raise ValueError(str(error)) from None

    @staticmethod
    def torchInstalled() -> bool:
        """PyTorch and what the library's torch path needs beside it (MONAI, ...)."""
        import importlib.util

        return (importlib.util.find_spec("torch") is not None
                and not missing_requirements(requirements_file(torch=True)))

    def dependenciesInstalled(self, withTorch: bool = True) -> bool:
        return not missing_requirements() and (not withTorch or self.torchInstalled())

    def installDependencies(self, askConfirmation: bool = True,
                            torchReason: Optional[str] = None) -> None:
        """The packages of requirements.txt and, when `torchReason` says why PyTorch is
        needed, PyTorch through the PyTorch extension and requirements-torch.txt; never
        replacing what Slicer ships (numpy, SimpleITK) or an installed torch: those are
        held at their installed versions by a constraints file. With RADIOGENOMICS_WHEELS
        set, from that folder of wheels only (an offline workstation)."""
        from RadioGenomicsLogic.requirements import MINIMUM_TORCH

        withTorch = torchReason is not None
        if self.dependenciesInstalled(withTorch):
            return
        files = [requirements_file()]
        if withTorch:
            files.append(requirements_file(torch=True))
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise RuntimeError(_("This model needs PyTorch ({reason}): install the PyTorch "
                                     "extension from the Extensions Manager, restart Slicer, "
                                     "then Predict again").format(reason=torchReason)) from None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                if torchLogic.installTorch(askConfirmation=askConfirmation,
                                           torchVersionRequirement=f">={MINIMUM_TORCH}") is None:
                    raise RuntimeError(_("PyTorch was not installed"))
        missing = [r for path in files for r in missing_requirements(path)]
        if not missing:
            return
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("RadioGenomics needs these Python packages (once, a few minutes):") + "\n"
                + "\n".join(missing), windowTitle="RadioGenomics"):
            raise RuntimeError(_("the Python packages were not installed"))
        with tempfile.TemporaryDirectory() as folder:
            constraints = Path(folder) / "constraints.txt"
            constraints.write_text(constraints_text())
            wheels = os.environ.get(WHEELS_VARIABLE)
            if hasattr(slicer, "pydeps") and not wheels:  # Slicer 5.11 and later
                for path in files:
                    slicer.pydeps.pip_ensure(slicer.pydeps.load_requirements(str(path)),
                                             constraints=str(constraints), requester="RadioGenomics")
            else:
                slicer.util.pip_install(pip_arguments(missing, constraints, wheels))

    # ------------------------------------------------------------ predict

    def inputProblem(self, parameters: RadioGenomicsParameterNode,
                     channels: list[str]) -> Optional[str]:
        """Why Predict cannot run yet, or None."""
        if not parameters.model:
            return _("Choose a model bundle (add one from a folder or a zip).")
        missing = [c for c in channels if parameters.channelVolumes.get(c) is None]
        if missing:
            return _("Choose the {channels} volume(s).").format(channels=", ".join(missing))
        if parameters.tumour is None:
            return _("Choose the tumour segmentation or labelmap.")
        if parameters.tumour.IsA("vtkMRMLSegmentationNode") and not parameters.segmentID:
            return _("Choose the tumour segment.")
        return None

    def writeInputs(self, channels: list[str], channelVolumes: dict, tumour, segmentID: str,
                    label: int, brainMask, folder: Path) -> list[str]:
        """Write the nodes to files in `folder`; the matching command arguments."""
        folder.mkdir(parents=True, exist_ok=True)
        arguments = []
        for channel in channels:
            dicom = self.sourceDicomFiles(channelVolumes[channel])
            if dicom:  # read as loaded: the results can go back into that DICOM study
                path = folder / channel
                path.mkdir(exist_ok=True)
                for index, file in enumerate(dicom):
                    shutil.copy2(file, path / f"{index:05d}.dcm")
            else:
                path = folder / f"{channel}.nrrd"
                mrml.write_volume(channelVolumes[channel], path)
            arguments += ["--image", f"{channel}={path}"]
        tumourPath = folder / "tumour.nrrd"
        if tumour.IsA("vtkMRMLSegmentationNode"):
            mrml.write_segment(tumour, segmentID, channelVolumes[channels[0]], tumourPath)
        else:
            mrml.write_volume(tumour, tumourPath)
            if label:
                arguments += ["--label", str(label)]
        arguments += ["--segmentation", str(tumourPath)]
        if brainMask is not None:
            mrml.write_volume(brainMask, folder / "brain_mask.nrrd")
            arguments += ["--brain-mask", str(folder / "brain_mask.nrrd")]
        return arguments

    @staticmethod
    def sourceDicomFiles(volume) -> list[str]:
        """The DICOM files a volume was loaded from (Slicer's DICOM database), or [] when
        it came from another format or a file is missing."""
        uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split()
        database = getattr(slicer, "dicomDatabase", None)
        if not uids or database is None:
            return []
        files = [database.fileForInstance(uid) for uid in uids]
        return files if all(files) and all(os.path.isfile(f) for f in files) else []

    def startPredict(self, model: Path, channelVolumes: dict, tumour, segmentID: str = "",
                     label: int = 0, brainMask=None, device: str = "auto", folds: str = "all",
                     onProgress: Callable[[int, int, str], None] = lambda *p: None,
                     onDone: Callable[[BackgroundJob], None] = lambda job: None) -> BackgroundJob:
        """Predict in the background into a new prediction run; the job carries the
        record (run folder, model, input nodes, units, markers) its results belong to."""
        card = self.bundleCard(model)
        channels = list(card.channels)
        folder = Path(tempfile.mkdtemp(prefix="RadioGenomics-", dir=slicer.app.temporaryPath))
        inputs = self.writeInputs(channels, channelVolumes, tumour, segmentID, label, brainMask,
                                  folder / "inputs")
        run = folder / "run"
        nodeIDs = {c: channelVolumes[c].GetID() for c in channels}
        nodeIDs["tumour"] = tumour.GetID()
        record = JobRecord("predict", str(run), str(model), nodeIDs, card.units,
                           tuple(card.markers))
        arguments = predict_arguments(str(model), inputs, str(run), device, folds,
                                      self.torchInstalled())
        return BackgroundJob(arguments, record, onProgress, onDone)

    def importResults(self, record: JobRecord,
                      parameters: RadioGenomicsParameterNode) -> vtkMRMLTableNode:
        """A finished run's gene table as a table node (and a filtered view of it) in
        `parameters`, with the units, markers, model and volumes of the job's record."""
        mrml.import_results(slicer.mrmlScene, record, parameters)
        return parameters.results

    def updateResultsView(self, parameters: RadioGenomicsParameterNode) -> None:
        mrml.show_results(parameters)

    # ------------------------------------------------------------ maps

    @staticmethod
    def mapFiles(runFolder: str) -> list[Path]:
        maps = Path(runFolder) / "maps" if runFolder else None
        return sorted(p for p in maps.iterdir() if p.is_file()) if maps and maps.is_dir() else []

    def geneMapFile(self, runFolder: str, model: str, gene: str) -> Path:
        """A gene's map from the run (its token embeddings and the model's gene layer), in
        this process, well under a second; kept in the run's maps/ folder."""
        from RadioGenomicsLib.bundle import load_bundle
        from RadioGenomicsLib.errors import InputError
        from RadioGenomicsLib.predict import map_file_name
        from RadioGenomicsLib.run import open_run, run_maps, write_maps

        path = Path(runFolder) / "maps" / map_file_name(gene, ".nrrd")
        if not path.is_file():
            try:
                run, bundle = open_run(runFolder, load_bundle(model, verify_checksums=False))
                write_maps(run_maps(run, bundle, [gene]), path.parent)
            except InputError as error:
                raise ValueError(str(error)) from None
        return path

    def showGeneMap(self, parameters: RadioGenomicsParameterNode,
                    gene: str) -> vtkMRMLScalarVolumeNode:
        """Show a gene's map over the study the results came from (foreground, colour map
        and legend, transparent where the map has no value)."""
        path = self.geneMapFile(parameters.runFolder, parameters.resultsModel, gene)
        if parameters.geneMap is not None:
            slicer.mrmlScene.RemoveNode(parameters.geneMap)
        node = mrml.load_volume(slicer.mrmlScene, path, _("{gene} map").format(gene=gene))
        mrml.show_as_map(node, MAP_COLOR_NODE_ID)
        slicer.modules.colors.logic().AddDefaultColorLegendDisplayNode(node)
        slicer.util.setSliceViewerLayers(background=parameters.resultsVolume, foreground=node,
                                         foregroundOpacity=MAP_OPACITY)
        parameters.geneMap = node
        return node

    def startExportDicom(self, runFolder: str, model: str, out: Path, genes: list[str],
                         onDone: Callable[[BackgroundJob], None] = lambda job: None
                         ) -> BackgroundJob:
        """`radiogenomics export-dicom` of a run (its study must have been read from DICOM:
        the library says so in one line otherwise)."""
        arguments = ["export-dicom", "--run", runFolder, "--model", model, "--out", str(out)]
        for gene in genes:
            arguments += ["--gene", gene]
        return BackgroundJob(arguments, None, lambda *progress: None, onDone)

    def exportMaps(self, runFolder: str, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy2(path, folder / path.name)) for path in self.mapFiles(runFolder)]


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
        logic.installDependencies(askConfirmation=False,
                                  torchReason="the self-test makes an untrained bundle")
        models = Path(tempfile.mkdtemp(prefix="RadioGenomicsTest-"))
        previousFolder = logic.modelsFolder()
        logic.setModelsFolder(models / "models")
        try:
            self.delayDisplay("Making a synthetic study and an untrained bundle")
            volume, segmentation, segmentID = self.makeStudy()
            bundle = logic.addBundle(self.makeBundle(models))
            self.assertEqual(logic.bundles(), [bundle])
            self.assertEqual(list(logic.bundleCard(bundle).channels), ["ct"])

            parameters = logic.getParameterNode()
            parameters.model = str(bundle)
            parameters.channelVolumes = {"ct": volume}
            parameters.tumour = segmentation
            parameters.segmentID = segmentID
            self.assertIsNone(logic.inputProblem(parameters, ["ct"]))

            self.delayDisplay("Predicting in the background")
            progress = []
            job = logic.startPredict(bundle, {"ct": volume}, segmentation, segmentID,
                                     device="cpu", onProgress=lambda *p: progress.append(p))
            job.wait()
            self.assertTrue(job.succeeded, job.errorMessage())
            self.assertTrue(progress, "no PROGRESS line was parsed")

            table = logic.importResults(job.record, parameters)
            self.assertEqual(table.GetNumberOfRows(), 6)
            self.assertEqual(table.GetTable().GetColumnByName("rank").GetClassName(), "vtkIntArray")
            self.assertTrue(table.GetColumnUnitLabel("predicted"))
            shown = mrml.column_values(parameters.resultsView, "gene_name")
            self.assertEqual(shown[:3], ["EGFR", "KRAS", "TP53"])  # markers, in the pinned order

            self.delayDisplay("Showing the maps of EGFR and of MYC, from the run")
            for gene in ("EGFR", "MYC"):
                geneMap = logic.showGeneMap(parameters, gene)
                np.testing.assert_allclose(mrml.ijk_to_ras(geneMap), mrml.ijk_to_ras(volume),
                                           atol=1e-4)
                self.assertEqual(geneMap.GetImageData().GetDimensions(),
                                 volume.GetImageData().GetDimensions())
                self.assertEqual(geneMap.GetDisplayNode().GetApplyThreshold(), 1)

            self.delayDisplay("Exporting the table and the maps")
            exported = models / "export" / "genes.tsv"
            mrml.write_gene_table(table, exported)
            again = mrml.read_gene_table(slicer.mrmlScene, exported, "again")
            self.assertEqual(mrml.column_values(again, "gene_name"),
                             mrml.column_values(table, "gene_name"))
            copied = logic.exportMaps(parameters.runFolder, models / "export" / "maps")
            self.assertEqual(sorted(p.name.split(".")[0] for p in copied), ["EGFR", "MYC"])
            self.delayDisplay("Test passed")
        finally:
            logic.setModelsFolder(previousFolder)
            shutil.rmtree(models, ignore_errors=True)
