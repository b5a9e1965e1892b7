"""`radiogenomics` commands in a child process, so that the page never freezes.

The same contract as the Slicer module's background job: RADIOGENOMICS_PROGRESS=lines
makes the library print `PROGRESS done/total step` lines; exit code 2 comes with the
library's one-line error (`radiogenomics CMD: error: ...`).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from typing import Callable

PROGRESS_LINE = re.compile(r"^PROGRESS (\d+)/(\d+|\?) (.*)$")  # RadioGenomicsLib/progress.py
ERROR_LINE = re.compile(r"^radiogenomics \w+: error: ")  # RadioGenomicsLib/cli/__init__.py


class CliJob:
    """One `python -m RadioGenomicsLib ARGS` (or `-m MODULE ARGS`) in its own process group."""

    def __init__(self, arguments: list[str], on_progress: Callable[[int, int, str], None],
                 module: str = "RadioGenomicsLib"):
        self.command = [sys.executable, "-m", module, *arguments]
        self.on_progress = on_progress
        self.output: list[str] = []
        self.cancelled = False
        self.return_code: int | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def run(self) -> bool:
        """Run to the end; True when it succeeded (and was not cancelled)."""
        environment = {**os.environ, "RADIOGENOMICS_PROGRESS": "lines", "PYTHONUNBUFFERED": "1"}
        self._process = await asyncio.create_subprocess_exec(
            *self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, env=environment, start_new_session=True)
        async for raw in self._process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            match = PROGRESS_LINE.match(line)
            if match:
                done, total, step = match.groups()
                self.on_progress(int(done), 0 if total == "?" else int(total), step)
            else:
                self.output.append(line)
        self.return_code = await self._process.wait()
        return self.return_code == 0 and not self.cancelled

    def cancel(self) -> None:
        """Stop the command and anything it started (its process group)."""
        self.cancelled = True
        if self._process is not None and self._process.returncode is None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def error_message(self) -> str:
        """The library's one-line error, or the last line of a crash."""
        if self.cancelled:
            return "Cancelled."
        for line in reversed(self.output):
            if ERROR_LINE.match(line):
                return ERROR_LINE.sub("", line)
        last = next((line for line in reversed(self.output) if line.strip()), "no output")
        return f"{last} (exit code {self.return_code})"

    def stdout(self) -> str:
        return "\n".join(self.output)
