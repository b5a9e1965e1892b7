"""The one error type that means "the user's input is wrong" (exit code 2)."""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad input: the message is one line that names the file and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
