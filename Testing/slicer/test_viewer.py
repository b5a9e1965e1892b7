"""The web viewer in a real browser: Debian's Chromium driven by Playwright.

`radiogenomics viewer` runs in a child process on a free port (as a user starts it);
the page loads the sample (a synthetic study and an untrained `small` bundle: labelled
so in the page, since training the demo's model would take minutes), predicts, shows a
gene's map, and exports the table, which must equal the CLI's table for the same inputs.
Pixels are read from the rendered frames of the axial view. Screenshots of the main
states are kept in $RADIOGENOMICS_ARTEFACTS (default Testing/artefacts/viewer).

Runs in the viewer's environment (`make slicer-test`); skipped where trame-slicer is
not installed.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="needs the viewer environment: run `make slicer-test`")
playwright = pytest.importorskip("playwright.sync_api")
pd = pytest.importorskip("pandas")
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTEFACTS = Path(os.environ.get("RADIOGENOMICS_ARTEFACTS", ROOT / "Testing" / "artefacts" / "viewer"))
ANNOUNCE = re.compile(r"RadioGenomics viewer: open (\S+)")
COLOURFUL = 60  # max - min over R, G, B: the map's colours; the study is grey
CHANGED = 40  # summed |difference| over R, G, B that is more than JPEG noise


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ViewerProcess:
    """`radiogenomics viewer` in a child process; `url` once it said where it listens."""

    def __init__(self, work: Path, *options: str, env: dict | None = None):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "RadioGenomicsLib", "viewer", "--port", str(self.port),
             "--work", str(work), "--demo", str(work / "no-demo"), *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            match = ANNOUNCE.search(line)
            if match:
                return match.group(1)
        raise AssertionError("the viewer did not start:\n" + "".join(self.output[-30:]))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail("Chromium is missing: `make testdata` installs Debian's chromium")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    work = tmp_path_factory.mktemp("viewer")
    process = ViewerProcess(work)
    try:
        yield process.url(), work
    finally:
        process.stop()


def shot(page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"))


# pixels outside the map that may differ between two frames: the view is streamed as JPEG
# (re-encoded, sometimes at interactive quality), which moves a few hundred pixels of a
# 380,000-pixel frame past the threshold; the map itself changes thousands
STRAY_PIXELS = 400


def axial_frame(page, settle: float = 30) -> np.ndarray:
    """The axial view's frame as RGB, once two frames a moment apart are the same."""
    view = page.locator("img.image-display-area").first
    previous, deadline = None, time.monotonic() + settle
    while time.monotonic() < deadline:
        time.sleep(0.7)
        frame = np.asarray(Image.open(io.BytesIO(view.screenshot())).convert("RGB"), np.int16)
        if previous is not None and previous.shape == frame.shape and \
                np.abs(frame - previous).sum(axis=2).max() < CHANGED:
            return frame
        previous = frame
    raise AssertionError("the axial view kept changing")


def colourful(frame: np.ndarray) -> np.ndarray:
    return (frame.max(axis=2) - frame.min(axis=2)) > COLOURFUL


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).sum(axis=2) > CHANGED


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    grown = mask.copy()
    for _ in range(pixels):
        grown[1:] |= grown[:-1]; grown[:-1] |= grown[1:]  # noqa: E702
        grown[:, 1:] |= grown[:, :-1]; grown[:, :-1] |= grown[:, 1:]  # noqa: E702
    return grown


def wait_for_status(page, text: str, timeout_s: float = 120) -> None:
    page.wait_for_function(f"document.querySelector('[data-testid=\"status\"]').innerText"
                           f".includes({json.dumps(text)})", timeout=timeout_s * 1000)


def set_opacity(page, key: str, presses: int = 1) -> None:
    thumb = page.locator('[data-testid="opacity"] .v-slider-thumb')
    thumb.focus()
    for _ in range(presses):
        thumb.press(key)


def cli_table(work: Path, out: Path) -> pd.DataFrame:
    """The CLI's table for the sample's inputs (the viewer's defaults: every fold)."""
    sample = json.loads((work / "sample" / "sample.json").read_text())
    images = [f"--image={c}={p}" for c, p in sample["images"].items()]
    subprocess.run([sys.executable, "-m", "RadioGenomicsLib", "predict", "--model",
                    sample["bundle"], *images, "--segmentation", sample["segmentation"],
                    "--out", str(out), "--device", "cpu"], cwd=ROOT, check=True,
                   capture_output=True)
    return pd.read_csv(out)


def test_sample_predict_map_and_export(browser, viewer, tmp_path):
    url, work = viewer
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page.goto(url)
    page.wait_for_selector('[data-testid="load-sample"]', timeout=60_000)
    shot(page, "01-start")

    page.click('[data-testid="load-sample"]')
    page.wait_for_selector('[data-testid="model-card"]', timeout=120_000)
    label = page.inner_text('[data-testid="sample-label"]')
    assert "Synthetic study" in label and "untrained" in label
    assert "Channels: t1, t1gd, t2, flair" in page.inner_text('[data-testid="model-card"]')
    assert "For research use only" in page.inner_text('[data-testid="model-card"]')
    shot(page, "02-sample-loaded")

    page.click('[data-testid="predict"]')
    page.wait_for_selector("[data-gene]", timeout=240_000)
    genes = page.locator("[data-gene]").evaluate_all("nodes => nodes.map(n => n.dataset.gene)")
    assert genes[:3] == ["IDH1", "EGFR", "MGMT"]  # markers pinned in their order
    # `--runtime auto`: the untrained sample has no exported fold models, so torch
    wait_for_status(page, "Predicted 60 genes (torch, float32).")
    shot(page, "03-gene-table")

    # the overlay: EGFR's map, seen at opacity 0 (the study alone), then 1
    page.click('[data-gene="EGFR"]')
    wait_for_status(page, "Showing the map of EGFR")
    set_opacity(page, "Home")
    study = axial_frame(page)
    set_opacity(page, "End")
    egfr = axial_frame(page)
    shot(page, "04-egfr-map")
    outline = dilate(colourful(study), 2)  # the tumour's outline is drawn in colour
    support = colourful(egfr) & ~outline
    assert support.sum() > 500, "no map overlay on the axial view"
    rows, columns = np.nonzero(colourful(study))
    tumour_centre = (int(rows.mean()), int(columns.mean()))
    assert dilate(support, 3)[tumour_centre], "the map does not cover the tumour"
    near_support = dilate(support | outline, 3)
    assert (changed(study, egfr) & ~near_support).sum() < STRAY_PIXELS, \
        "pixels changed outside the map"

    # another gene: other colours, in the same place only
    page.click('[data-gene="MGMT"]')
    wait_for_status(page, "Showing the map of MGMT")
    mgmt = axial_frame(page)
    assert changed(egfr, mgmt).sum() > 100
    assert (changed(egfr, mgmt) & ~near_support).sum() < STRAY_PIXELS
    # half opacity: the study shows through the map
    set_opacity(page, "ArrowLeft", 10)
    half = axial_frame(page)
    assert changed(mgmt, half)[support].mean() > 0.5
    assert (changed(mgmt, half) & ~near_support).sum() < STRAY_PIXELS
    saturation = lambda frame: (frame.max(axis=2) - frame.min(axis=2))[support].mean()  # noqa: E731
    assert saturation(half) < saturation(mgmt)
    shot(page, "05-mgmt-half-opacity")

    with page.expect_download() as download:
        page.click('[data-testid="export-csv"]')
    exported = tmp_path / "exported.csv"
    download.value.save_as(exported)
    pd.testing.assert_frame_equal(pd.read_csv(exported), cli_table(work, tmp_path / "cli.csv"),
                                  rtol=1e-5)
    with page.expect_download() as download:
        page.click('[data-testid="export-map"]')
    assert download.value.suggested_filename == "MGMT.nrrd"
    map_file = tmp_path / "MGMT.nrrd"
    download.value.save_as(map_file)
    assert map_file.read_bytes().startswith(b"NRRD")
    # the sample was not read from DICOM: the library's one line, and no PACS anywhere
    page.click('[data-testid="export-dicom"]')
    assert error_text(page, "DICOM").endswith(".nii.gz: is not a DICOM series folder: DICOM output "
                                     "needs a study whose images were read from DICOM")
    assert page.locator('[data-testid="dicom-zip"], [data-testid="pacs"]').count() == 0
    page.close()


def open_with_sample(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.wait_for_selector('[data-testid="load-sample"]', timeout=60_000)
    page.click('[data-testid="load-sample"]')
    page.wait_for_selector('[data-testid="model-card"]', timeout=120_000)
    return page


def error_text(page, containing: str) -> str:
    """The page's error line once it holds `containing` (or after a minute): the server's
    state is shared, so an error an earlier test left may show first."""
    page.wait_for_selector('[data-testid="error"]', timeout=120_000)
    deadline = time.monotonic() + 60
    text = page.inner_text('[data-testid="error"]')
    while containing not in text and time.monotonic() < deadline:
        time.sleep(0.2)
        text = page.inner_text('[data-testid="error"]')
    return text


def test_typed_path_outside_the_server_folders_is_refused(browser, viewer):
    page = open_with_sample(browser, viewer[0])
    field = page.get_by_label("Study folder on the server")
    field.fill("/etc")
    field.press("Enter")
    assert "/etc: is outside the folders this viewer was started with" in error_text(page, "/etc")
    page.close()


def test_uploaded_study_with_a_bad_segmentation_gets_the_library_error(browser, viewer, tmp_path):
    """Upload a study (the sample's channels, renamed) whose tumour segmentation is empty:
    the channels are assigned by name, and Predict shows the library's one-line error."""
    import SimpleITK as sitk

    url, work = viewer
    page = open_with_sample(browser, url)
    sample = json.loads((work / "sample" / "sample.json").read_text())
    files = []
    for channel, source in sample["images"].items():
        files.append(tmp_path / f"P7_{channel.replace('t1gd', 't1ce')}.nii.gz")
        files[-1].write_bytes(Path(source).read_bytes())
    empty = sitk.Image(sitk.ReadImage(sample["segmentation"]).GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(sitk.ReadImage(sample["segmentation"]))
    files.append(tmp_path / "P7_seg.nii.gz")
    sitk.WriteImage(empty, str(files[-1]))
    page.set_input_files('[data-testid="upload"] input[type=file]', [str(f) for f in files])
    page.wait_for_function("document.querySelector('[data-testid=\"study-path\"] input')"
                           ".value === 'upload 1'", timeout=60_000)  # the new study, chosen
    uploaded = work / "uploads" / "1"
    assert sorted(p.name for p in uploaded.iterdir()) == sorted(f.name for f in files)
    page.wait_for_selector("text=P7_t1ce.nii.gz", timeout=30_000)  # t1gd, assigned by name
    page.click('[data-testid="predict"]')
    message = error_text(page, "P7_seg")
    assert message == f"{uploaded / 'P7_seg.nii.gz'}: the segmentation is empty (no non-zero voxel)"
    shot(page, "06-bad-input")
    page.close()


def test_painted_tumour_is_written_on_the_study_grid_and_predicted(browser, viewer):
    """Slicer's segment editor (paint effect) in the page: a stroke across the axial view
    becomes the tumour labelmap (the module's write_segment) that Predict then uses."""
    import SimpleITK as sitk

    url, work = viewer
    page = open_with_sample(browser, url)
    # the study's first frame before painting: a study still opening resets the paint mode
    # (seen under load: the stroke then never counted)
    view = page.locator("img.image-display-area").first
    view.wait_for(state="visible", timeout=90_000)
    page.click('[data-testid="paint"]')
    wait_for_status(page, "Paint the tumour")
    page.wait_for_selector('[data-testid="use-painting"]:not([disabled])', timeout=30_000)
    box = view.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 30, y)
    page.mouse.down()
    for step in range(1, 13):
        page.mouse.move(x - 30 + 5 * step, y + 2 * step, steps=2)
    page.mouse.up()
    page.wait_for_timeout(1000)
    shot(page, "07-painting")
    page.click('[data-testid="use-painting"]')
    wait_for_status(page, "The painted tumour is painted-")
    painted = sorted((work / "painted").glob("painted-*.nrrd"))[-1]
    mask = sitk.ReadImage(str(painted))
    sample = json.loads((work / "sample" / "sample.json").read_text())
    study = sitk.ReadImage(sample["images"]["t1gd"])
    assert mask.GetSize() == study.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), study.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(mask.GetDirection(), study.GetDirection(), atol=1e-6)
    voxels = sitk.GetArrayFromImage(mask)
    assert set(np.unique(voxels)) == {0, 1} and 20 < voxels.sum() < voxels.size // 20
    page.click('[data-testid="predict"]')
    wait_for_status(page, "Predicted", timeout_s=240)
    assert page.locator("[data-gene]").count() > 0
    page.close()


def predict_processes(work: Path) -> list[str]:
    """Command lines of running `predict` commands that write under `work`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if " predict " in text and str(work) in text:
            found.append(text)
    return found


def test_cancel_stops_the_prediction(browser, viewer):
    url, work = viewer
    page = open_with_sample(browser, url)
    page.click('[data-testid="predict"]')
    page.wait_for_selector('[data-testid="cancel"]:not([disabled])', timeout=30_000)
    assert page.locator('[data-testid="progress"]').is_visible()
    assert page.inner_text('[data-testid="step"]') == "reading and preprocessing the study"
    deadline = time.monotonic() + 20
    while not predict_processes(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert predict_processes(work), "no predict process to cancel"
    page.click('[data-testid="cancel"]')
    assert error_text(page, "Cancelled") == "Cancelled."
    assert predict_processes(work) == []
    assert page.locator('[data-testid="predict"]').is_enabled()
    page.close()


def test_non_loopback_server_needs_its_token(browser, tmp_path):
    process = ViewerProcess(tmp_path, "--host", "0.0.0.0")
    try:
        url = process.url()
        token = re.search(r"\?secret=([\w-]{16,})$", url)
        assert token, url
        local = f"http://127.0.0.1:{process.port}/"  # only loopback traffic in tests
        page = browser.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(local)
        deadline = time.monotonic() + 30
        while not any("Authentication failed" in m for m in console) and time.monotonic() < deadline:
            page.wait_for_timeout(500)
        assert any("Authentication failed" in m for m in console), console
        assert page.locator('[data-testid="load-sample"]').count() == 0
        page.goto(f"{local}?secret={token.group(1)}")
        page.wait_for_selector('[data-testid="load-sample"]', timeout=60_000)
        page.close()
    finally:
        process.stop()


def test_short_token_on_a_network_address_refuses_to_start(tmp_path):
    result = subprocess.run([sys.executable, "-m", "RadioGenomicsLib", "viewer", "--host",
                             "0.0.0.0", "--token", "short", "--work", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "radiogenomics viewer: error: --host 0.0.0.0 is reachable from other machines" \
        in result.stderr


# ---------------------------------------------------------------- a PACS (Debian's Orthanc)

SEG_STORAGE, PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.30"
COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """A real Orthanc holding slicerio's chest CT as a DICOM series and a workstation's
    DICOM SEG of a ball tumour on it; a tiny untrained CT bundle in a models folder."""
    import slicerio
    import SimpleITK as sitk

    from RadioGenomicsLib.bundle import make_untrained_bundle
    from RadioGenomicsLib.imaging import read_volume
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.preprocess import PreprocessSettings
    from Testing.dicom_series import sphere, write_ct_series, write_workstation_seg
    from Testing.orthanc import running_orthanc

    root = tmp_path_factory.mktemp("pacs")
    ct = sitk.ReadImage(str(Path(slicerio.__file__).parent / "data" / "CTChest4.nrrd"))
    uids = write_ct_series(ct, root / "ct")
    tumour = sphere(read_volume(root / "ct"), 25.0)
    write_workstation_seg(root / "ct", tumour, root / "contour.dcm")
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}.1" for i in range(8)],
                          "gene_name": ["EGFR", "TP53", "KRAS"] + [f"GENE{i}" for i in range(3, 8)],
                          "train_mean": np.linspace(1.0, 2.0, 8), "train_std": 0.5,
                          "validation_r": 0.4, "validation_p_adj": 0.01})
    make_untrained_bundle(root / "models" / "ct_tiny", ModelConfig.preset("small"), ["ct"], genes,
                          PreprocessSettings(max_slices=4).to_dict(), seed=1, folds=2)
    with running_orthanc(root / "orthanc") as server:
        server.upload([*sorted((root / "ct").iterdir()), root / "contour.dcm"])
        yield {"server": server, "models": root / "models",
               "tumour": sitk.GetArrayFromImage(tumour), **uids}


def test_pacs_study_predicted_exported_as_dicom_and_sent_back(browser, pacs, tmp_path):
    """--pacs: the page lists the server's studies, opens one (its own SEG is the tumour),
    predicts, exports the run as DICOM (a zip the browser downloads) and sends it back."""
    import zipfile

    import pydicom
    import SimpleITK as sitk

    from RadioGenomicsLib.pacs import CREDENTIALS_FILE_ENV, PASSWORD_ENV, USER_ENV
    from Testing.orthanc import PASSWORD, USER

    server = pacs["server"]
    environment = {k: v for k, v in os.environ.items() if k != CREDENTIALS_FILE_ENV}
    environment |= {USER_ENV: USER, PASSWORD_ENV: PASSWORD}
    work = tmp_path / "work"
    process = ViewerProcess(work, "--pacs", server.dicomweb, "--models", str(pacs["models"]),
                            env=environment)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        page.goto(process.url())
        study = page.locator(f'[data-study="{pacs["study"]}"]')
        study.wait_for(timeout=60_000)
        assert "Test Patient (RG-TEST-0001) · 2026-01-02 · CT" in study.inner_text()
        shot(page, "08-pacs-studies")
        study.click()
        wait_for_status(page, "Opened from the PACS: 35 instances of 2 series")  # CT + SEG
        assert "Channels: ct" in page.inner_text('[data-testid="model-card"]')
        page.click('[data-testid="predict"]')
        page.wait_for_selector('[data-gene="EGFR"]', timeout=240_000)
        run = work / "runs" / "001" / "run"
        tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(run / "tumour.nrrd")))
        np.testing.assert_array_equal(tumour, pacs["tumour"])  # the study's own SEG
        page.click('[data-gene="EGFR"]')
        wait_for_status(page, "Showing the map of EGFR")
        page.click('[data-testid="export-dicom"]')
        wait_for_status(page, "DICOM results (research use only)", timeout_s=120)
        shot(page, "09-dicom-exported")
        with page.expect_download() as download:
            page.click('[data-testid="dicom-zip"]')
        assert download.value.suggested_filename == "radiogenomics-dicom.zip"
        exported = tmp_path / "dicom.zip"
        download.value.save_as(exported)
        with zipfile.ZipFile(exported) as archive:
            names = sorted(archive.namelist())
            datasets = {n: pydicom.dcmread(io.BytesIO(archive.read(n))) for n in names
                        if n.endswith(".dcm")}
            assert archive.read("report.pdf").startswith(b"%PDF")
        assert names == ["map_EGFR.dcm", "report.pdf", "report_sc.dcm", "report_sr.dcm",
                         "seg.dcm"]
        assert datasets["seg.dcm"].SOPClassUID == SEG_STORAGE
        assert datasets["map_EGFR.dcm"].SOPClassUID == PARAMETRIC_MAP_STORAGE
        assert datasets["report_sr.dcm"].SOPClassUID == COMPREHENSIVE_SR_STORAGE
        assert {d.StudyInstanceUID for d in datasets.values()} == {pacs["study"]}
        assert {d.PatientID for d in datasets.values()} == {"RG-TEST-0001"}
        assert datasets["seg.dcm"].NumberOfFrames == int(pacs["tumour"].any(axis=(1, 2)).sum())

        page.click('[data-testid="send-to-pacs"]')
        wait_for_status(page, "4 DICOM objects stored on the PACS", timeout_s=60)
        held = {i["MainDicomTags"]["SOPInstanceUID"]
                for i in server.get("/instances?expand").json()}
        assert {d.SOPInstanceUID for d in datasets.values()} <= held
        assert PASSWORD not in page.content()
        page.close()
    finally:
        process.stop()
    assert PASSWORD not in "".join(process.output)
