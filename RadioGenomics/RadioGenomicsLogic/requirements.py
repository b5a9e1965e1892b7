"""Which of the module's Python requirements are missing from the running Python.

One list, `Resources/requirements.txt` (ranges that resolve in the Python of the oldest
supported Slicer); checked here with importlib.metadata, so the panel can tell before
anything is installed.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ModuleNotFoundError:  # an older Slicer Python: pip vendors the same library
    from pip._vendor.packaging.requirements import Requirement

MINIMUM_SLICER = (5, 10)  # Python 3.12; also in CMakeLists.txt and the README
KEPT_AS_INSTALLED = ("numpy", "SimpleITK", "torch")  # shipped by Slicer / the PyTorch extension
MINIMUM_TORCH = "2.4"


def requirements_file() -> Path:
    return Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"


def requirements(path: Path | None = None) -> list[Requirement]:
    lines = (path or requirements_file()).read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines
            if line.split("#")[0].strip()]


def missing_requirements(path: Path | None = None) -> list[str]:
    """Requirements not installed, or installed at a version outside their range."""
    missing = []
    for requirement in requirements(path):
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(requirement))
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            missing.append(str(requirement))
    return missing
