"""Where the module finds its library, RadioGenomicsLib, and how its children find it.

Standard library only: RadioGenomics.py calls `ensure_library` before anything that
imports RadioGenomicsLib. The library lies beside the module file in the zip of `make
slicer-package` (RadioGenomics/RadioGenomicsLib) and in an extension build (both in
qt-scripted-modules/), and one folder up in a source checkout (the repository root):
either folder, added to Slicer's *Additional module paths*, works as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Mapping, Optional

LIBRARY = "RadioGenomicsLib"


def library_candidates(module_folder: Path) -> list[Path]:
    """Folders that may hold RadioGenomicsLib, in the order they are tried."""
    return [module_folder, module_folder.parent]


def find_library(module_folder: Path) -> Optional[Path]:
    """The first candidate folder with a RadioGenomicsLib package in it, or None."""
    for folder in library_candidates(Path(module_folder)):
        if (folder / LIBRARY / "__init__.py").is_file():
            return folder
    return None


def ensure_library(module_folder: Path) -> Path:
    """Make `import RadioGenomicsLib` work in this Python (the folder found goes on
    sys.path when it does not yet); the folder the library is imported from."""
    if importlib.util.find_spec(LIBRARY) is None:
        folder = find_library(module_folder)
        if folder is None:
            raise ModuleNotFoundError(
                f"{LIBRARY} is neither in {module_folder} nor in {Path(module_folder).parent}: "
                "add the module folder of the `make slicer-package` zip (or of a source "
                "checkout) to Slicer's Additional module paths")
        sys.path.insert(0, str(folder))
        importlib.invalidate_caches()
    library = importlib.import_module(LIBRARY)
    return Path(library.__file__).resolve().parent.parent


def child_environment(library_folder: Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """PYTHONPATH for a child process (`PythonSlicer -m RadioGenomicsLib ...`): the
    library's folder first, then whatever the parent had."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, (str(library_folder),
                                                        environ.get("PYTHONPATH"))))}
