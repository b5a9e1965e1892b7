"""Background jobs of the Slicer faces, without Qt or Slicer: testable with pytest.

A job is one `radiogenomics` command in a child process. `OutputReader` reads its
output on a thread, as bytes decoded leniently (a Windows locale or a crashing library
can print bytes that are not UTF-8: the job must still end), and hands the GUI thread
progress and text events when it polls. `JobRecord` is what the face knew when it
started the job (the run folder, the model, the input nodes, the units): the completion
handler imports the results from it, whatever the GUI's selections have become since.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional

PROGRESS_LINE = re.compile(r"^PROGRESS (\d+)/(\d+|\?) (.*)$")  # RadioGenomicsLib/progress.py
ERROR_LINE = re.compile(r"^radiogenomics [\w-]+: error: ")  # RadioGenomicsLib/cli/__init__.py


@dataclass(frozen=True)
class JobRecord:
    """A job's inputs as they were when it started."""

    kind: str  # "predict"
    run_folder: str  # where the prediction run is written
    model: str  # bundle folder
    node_ids: dict = field(default_factory=dict)  # "ct"/"tumour"/... -> MRML node ID
    units: dict = field(default_factory=dict)  # gene table column -> unit label
    markers: tuple = ()  # genes pinned on top of the table


def read_lines(stream: IO[bytes], put: Callable[[str], None]) -> None:
    """Every line of a binary stream, decoded as UTF-8 with replacement characters."""
    for raw in iter(stream.readline, b""):
        put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))


class OutputReader:
    """Reads a child process's output on a thread; `poll` returns what arrived since."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.returncode: Optional[int] = None
        self._lines: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stream = self.process.stdout
        stream = getattr(stream, "buffer", stream)  # a text pipe: read its bytes
        try:
            read_lines(stream, self._lines.put)
        except (OSError, ValueError) as error:  # a pipe closed under us
            self._lines.put(f"(output unreadable: {error})")
        finally:
            self.process.wait()
            self._lines.put(None)

    def poll(self) -> list[tuple]:
        """("progress", done, total, description), ("text", line) or ("done", returncode)."""
        events = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return events
            if line is None:
                self.returncode = self.process.returncode
                events.append(("done", self.returncode))
                return events
            match = PROGRESS_LINE.match(line)
            if match:
                done, total, description = match.groups()
                events.append(("progress", int(done), 0 if total == "?" else int(total),
                               description))
            else:
                events.append(("text", line))

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)


def error_message(output: list[str], returncode: Optional[int]) -> str:
    """The library's one-line error (exit code 2), or the last line of a crash."""
    for line in reversed(output):
        if ERROR_LINE.match(line):
            return ERROR_LINE.sub("", line)
    last = next((line for line in reversed(output) if line.strip()), "no output")
    return f"{last} (exit code {returncode}; the full output is in the application log)"


def predict_arguments(model: str, inputs: list[str], run: str, device: str = "auto",
                      folds: str = "all", torch_installed: bool = True) -> list[str]:
    """`radiogenomics predict` as the Slicer module runs it: into a prediction run, with
    `--runtime auto` (a bundle's exported fold models on OpenVINO or ONNX Runtime, without
    PyTorch; torch otherwise). Without PyTorch's stack the device is the CPU: `auto`
    would choose torch for a GPU it can see."""
    device = device if torch_installed else "cpu"
    return ["predict", "--model", str(model), *inputs, "--out", str(Path(run).parent / "genes.csv"),
            "--run", str(run), "--device", device, "--folds", folds, "--runtime", "auto"]
