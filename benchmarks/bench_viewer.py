"""The web viewer as a user meets it, in Debian's Chromium (Playwright): start-up to the
first frame, Predict round trip in the page (1 fold and every fold) against the CLI's
`predict` on the same inputs, a gene map switch, and the server's memory.

Runs in the viewer's environment: `.venv-slicer/bin/python -m benchmarks.bench_viewer`
(`make slicer-venv` first); elsewhere it says so and returns.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_status(page, text: str, timeout_s: float = 600) -> None:
    page.wait_for_function(f"document.querySelector('[data-testid=\"status\"]').innerText"
                           f".includes({json.dumps(text)})", timeout=timeout_s * 1000)


def cli_predict_s(work: Path, folds: str) -> float:
    sample = json.loads((work / "sample" / "sample.json").read_text())
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "RadioGenomicsLib", "predict", "--model",
                    sample["bundle"], *[f"--image={c}={p}" for c, p in sample["images"].items()],
                    "--segmentation", sample["segmentation"], "--out", str(work / "cli.csv"),
                    "--folds", folds, "--device", "cpu"], cwd=ROOT, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def paper_sample(work: Path, folds: int) -> None:
    """The sample study with an untrained `paper` bundle of `folds` fold models (over the
    sample's genes: the encoder, not the gene count, is what a paper fold costs)."""
    from RadioGenomicsLib.bundle import load_bundle, make_untrained_bundle
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.preprocess import PreprocessSettings

    out = work / "sample"
    subprocess.run([sys.executable, "-m", "RadioGenomicsLib.demo", "--sample", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    sample = json.loads((out / "sample.json").read_text())
    genes = load_bundle(sample["bundle"]).genes[["gene_id", "gene_name"]]
    path = out / f"untrained-paper-{folds}"
    make_untrained_bundle(path, ModelConfig.preset("paper"), list(sample["images"]), genes,
                          PreprocessSettings().to_dict(), folds=folds)
    sample.update(bundle=str(path), label=f"untrained paper model, {folds} folds (benchmark)")
    (out / "sample.json").write_text(json.dumps(sample))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-folds", type=int, default=0, metavar="N",
                        help="measure an untrained paper bundle of N folds instead of the sample's")
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    if importlib.util.find_spec("trame_slicer") is None:
        print("bench_viewer: needs the viewer environment (.venv-slicer); skipped")
        return
    sys.path.insert(0, str(ROOT / "Testing" / "slicer"))
    from playwright.sync_api import sync_playwright
    from test_viewer import CHROMIUM, CHROMIUM_FLAGS, ViewerProcess

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as driver:
        work = Path(folder)
        if args.paper_folds:
            paper_sample(work, args.paper_folds)
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        started = time.perf_counter()
        viewer = ViewerProcess(work)
        url = viewer.url()
        listening = time.perf_counter() - started
        page.goto(url)
        page.wait_for_function("document.querySelector('img.image-display-area')?.src"
                               "?.startsWith('blob:')", timeout=120_000)
        first_frame = time.perf_counter() - started
        idle_mb = rss_mb(viewer.process.pid)

        page.click('[data-testid="load-sample"]')
        wait_status(page, "Sample loaded")
        page.wait_for_selector('[data-testid="model-card"]')
        results = {}
        for folds, button in (("first", "first fold (faster)"), ("all", "all folds")):
            page.get_by_role("button", name=button).click()
            started = time.perf_counter()
            page.click('[data-testid="predict"]')
            wait_status(page, "Predicting")
            wait_status(page, "Predicted")
            results[folds] = time.perf_counter() - started
            results[f"cli_{folds}"] = cli_predict_s(work, folds)
        started = time.perf_counter()
        page.click('[data-gene="EGFR"]')
        wait_status(page, "Showing the map of EGFR")
        first_map = time.perf_counter() - started
        started = time.perf_counter()
        page.click('[data-gene="MGMT"]')
        wait_status(page, "Showing the map of MGMT")
        switch = time.perf_counter() - started
        peak_mb = rss_mb(viewer.process.pid)
        browser.close()
        viewer.stop()

    model = f"untrained paper, {args.paper_folds} folds" if args.paper_folds else "the sample's"
    print(f"model: {model}; load {os.getloadavg()[0]:.1f}")
    print(f"start-up: listening {listening:.1f} s, first frame in the page {first_frame:.1f} s")
    for folds in ("first", "all"):
        print(f"Predict round trip ({folds} fold{'' if folds == 'first' else 's'}): page {results[folds]:.1f} s, CLI alone "
              f"{results['cli_' + folds]:.1f} s, ratio {results[folds] / results['cli_' + folds]:.2f}")
    print(f"map from the run: first gene {first_map:.2f} s, switch to another {switch:.2f} s")
    print(f"server memory (RSS): idle {idle_mb:.0f} MB, after predict and maps {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
