"""The Slicer faces' background jobs (RadioGenomicsLogic/jobs.py): no Slicer needed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "RadioGenomics"))
from RadioGenomicsLogic.jobs import JobRecord, OutputReader, error_message  # noqa: E402

CHILD = r"""
import sys
out = sys.stdout.buffer
out.write(b"PROGRESS 1/3 fold models\n")
out.write(b"caf\xe9 in latin-1, then a lone byte \xff\n")
out.write("r\u00e9sum\u00e9 in UTF-8\n".encode())
out.write(b"radiogenomics predict: error: /data/t1.nii.gz: truncated file\n")
out.flush()
sys.exit(3)
"""


def events_of(command: list[str], text_mode: bool) -> list[tuple]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=text_mode)  # Slicer's launcher: text mode
    reader = OutputReader(process)
    events, deadline = [], time.monotonic() + 30
    while not events or events[-1][0] != "done":
        assert time.monotonic() < deadline, f"the job never ended: {events}"
        events += reader.poll()
        time.sleep(0.02)
    return events


def test_bytes_that_are_not_utf8_do_not_stop_the_job():
    for text_mode in (True, False):
        events = events_of([sys.executable, "-c", CHILD], text_mode)
        assert events[0] == ("progress", 1, 3, "fold models")
        texts = [e[1] for e in events if e[0] == "text"]
        assert texts[0] == "caf\ufffd in latin-1, then a lone byte \ufffd"
        assert texts[1] == "r\u00e9sum\u00e9 in UTF-8"
        assert events[-1] == ("done", 3)  # the child's own exit code
        assert error_message(texts, 3) == "/data/t1.nii.gz: truncated file"


def test_a_crash_is_reported_by_its_last_line():
    events = events_of([sys.executable, "-c", "import sys; print('Segmentation fault'); "
                        "sys.exit(-11)"], True)
    texts = [e[1] for e in events if e[0] == "text"]
    assert events[-1] == ("done", 245) or events[-1] == ("done", -11)
    assert error_message(texts, events[-1][1]).startswith("Segmentation fault (exit code ")


def test_a_record_is_a_snapshot():
    record = JobRecord("predict", "/runs/1", "/models/gbm", {"t1": "vtkMRMLScalarVolumeNode1"},
                       {"predicted": "log10(1+x) of FPKM-UQ"}, ("EGFR",))
    assert record.markers == ("EGFR",) and record.node_ids["t1"].endswith("Node1")
