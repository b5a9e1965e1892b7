"""The one error type that means "the user's input is wrong" (exit code 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class InputError(Exception):
    """Bad input: the message is one line that names the file and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        # one line whatever a parser's message holds (pandas' end with a line break)
        self.problem = " ".join(problem.split()) if "\n" in problem or "\r" in problem else problem
        problem = self.problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file that must hold an object (settings, metadata), or an InputError saying why."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InputError(path, "must hold a JSON object")
    return document
