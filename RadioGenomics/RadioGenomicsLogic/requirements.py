"""Which of the module's Python requirements are missing from the running Python.

Two lists, as ranges that resolve in the Python of the oldest supported Slicer:
`Resources/requirements.txt`, what every prediction needs (a bundle with exported ONNX
fold models runs on ONNX Runtime: no PyTorch), and `Resources/requirements-torch.txt`,
what a bundle without them needs beside PyTorch (the PyTorch extension installs torch).
Checked with importlib.metadata, so the panel can tell before anything is installed.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Optional

try:
    from packaging.requirements import Requirement
except ModuleNotFoundError:  # an older Slicer Python: pip vendors the same library
    from pip._vendor.packaging.requirements import Requirement

MINIMUM_SLICER = (5, 10)  # Python 3.12; also in CMakeLists.txt and the README
KEPT_AS_INSTALLED = ("numpy", "SimpleITK", "torch")  # shipped by Slicer / the PyTorch extension
MINIMUM_TORCH = "2.4"
WHEELS_VARIABLE = "RADIOGENOMICS_WHEELS"  # a folder of wheels: install from it, no internet


def requirements_file(torch: bool = False) -> Path:
    name = "requirements-torch.txt" if torch else "requirements.txt"
    return Path(__file__).resolve().parent.parent / "Resources" / name


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


# RadioGenomicsLib.runtime.head.POOLINGS, which is not importable before the install
LIGHT_POOLINGS = ("topk", "mean", "attention", "tumour")


def torch_problem(metadata: dict[str, Any], folds: str = "all") -> Optional[str]:
    """Why predicting with a bundle (its metadata.json) needs PyTorch, or None when its
    exported fold models run on ONNX Runtime: the rule `radiogenomics predict --runtime
    auto` follows on a CPU (RadioGenomicsLib.runtime.pick_runtime), read here without
    the library's packages, which may not be installed yet."""
    pooling = metadata.get("model", {}).get("pooling", "topk")
    if pooling not in LIGHT_POOLINGS:
        return f"its head ({pooling} pooling) runs on PyTorch only"
    count = int(metadata.get("folds", 1)) if folds == "all" else 1
    exported = metadata.get("files", {})
    missing = [f"fold_{fold}.onnx" for fold in range(count) if f"fold_{fold}.onnx" not in exported]
    if missing:
        return (f"it has no exported fold models ({', '.join(missing)}); `radiogenomics "
                "export BUNDLE` writes them")
    return None


def pip_arguments(missing: list[str], constraints: Path, wheels: Optional[str]) -> list[str]:
    """Arguments of `pip install` for the missing requirements, held by the constraints
    file: from the package index, or, given a folder of wheels (`pip download` for
    Slicer's Python, see the README), from that folder only."""
    source = ["--no-index", "--find-links", str(wheels)] if wheels else []
    return [*source, *missing, "-c", str(constraints)]


def constraints_text() -> str:
    """A pip constraints file holding what Slicer ships and an installed torch at their
    installed versions (a package that is not installed is not constrained)."""
    lines = []
    for name in KEPT_AS_INSTALLED:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}\n")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "".join(lines)


def runtime_text(problem: Optional[str]) -> str:
    """The panel's line on what a bundle predicts with (`problem`: from torch_problem)."""
    if problem is None:
        return ("Runtime: the exported fold models on ONNX Runtime (or OpenVINO when "
                "installed); PyTorch is not needed.")
    return f"Runtime: PyTorch, needed because {problem}."
