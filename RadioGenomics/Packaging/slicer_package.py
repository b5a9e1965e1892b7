"""`make slicer-package`: the Slicer module as a zip that works from Slicer's *Additional
module paths*, without building the extension against a Slicer build tree.

The zip holds one folder, RadioGenomics/: the module and, inside it, RadioGenomicsLib
(where RadioGenomicsLogic/library.py looks first). What goes in is what the CMake lists
name (MODULE_PYTHON_SCRIPTS and _RESOURCES, RADIOGENOMICSLIB_SCRIPTS and _RESOURCES), so
the zip and an extension build hold the same files; plus the module's README and
INSTALL.txt. Entries carry a fixed date, so the same sources give the same zip.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "RadioGenomics"
FOLDER = "RadioGenomics"  # the one folder in the zip: the module folder to add in Slicer
INSTALL_FILE = "INSTALL.txt"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

INSTALL = """RadioGenomics {version} for 3D Slicer (Slicer 5.10 or later): install without building
=====================================================================================

1. Unzip this archive anywhere you keep programs, e.g. C:\\Slicer-modules or ~/slicer-modules.
2. In Slicer: Edit > Application Settings > Modules > Additional module paths: click
   "Add" and choose the unzipped folder RadioGenomics (the folder holding RadioGenomics.py).
3. Restart Slicer. The module is under Modules > Quantification > RadioGenomics.

The module finds its library (RadioGenomicsLib, inside this folder) by itself. The Python
packages it needs are installed into Slicer's Python on the first Predict, after a
confirmation: RadioGenomics/Resources/requirements.txt (enough for a model bundle with
exported ONNX fold models: no PyTorch) and, only for a bundle without them,
Resources/requirements-torch.txt beside PyTorch (install the PyTorch extension from the
Extensions Manager: it installs torch).

Offline (a workstation without internet): on any machine with internet and pip,
download the wheels for Slicer's Python (3.12 in Slicer 5.10 and 5.11) and the
workstation's system (here Linux; pip takes only wheels of exactly the platforms named):

    pip download -r RadioGenomics/Resources/requirements.txt -d wheels \\
        --python-version 3.12 --only-binary=:all: \\
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64

(Windows: --platform win_amd64; an Apple Silicon Mac: --platform macosx_14_0_arm64. Add
-r RadioGenomics/Resources/requirements-torch.txt for bundles that need PyTorch, which
also needs the PyTorch extension.) Copy the wheels folder over and start Slicer with the
environment variable RADIOGENOMICS_WHEELS set to that folder: the packages are then
installed from it only.
"""


def cmake_list(cmake_file: Path, variable: str) -> list[str]:
    """The entries of `set(VARIABLE ...)` in a CMakeLists.txt, ${MODULE_NAME} expanded."""
    text = cmake_file.read_text()
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    if not match:
        raise ValueError(f"{cmake_file}: no set({variable} ...)")
    module_name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text)
    entries = match.group(1).split()
    return [e.replace("${MODULE_NAME}", module_name.group(1) if module_name else "")
            for e in entries]


def package_files() -> dict[str, Path]:
    """Name in the zip -> the file in the repository."""
    module_cmake, top_cmake = MODULE / "CMakeLists.txt", ROOT / "CMakeLists.txt"
    module = [*cmake_list(module_cmake, "MODULE_PYTHON_SCRIPTS"),
              *cmake_list(module_cmake, "MODULE_PYTHON_RESOURCES"), "README.md"]
    library = [*cmake_list(top_cmake, "RADIOGENOMICSLIB_SCRIPTS"),
               *cmake_list(top_cmake, "RADIOGENOMICSLIB_RESOURCES")]
    files = {f"{FOLDER}/{name}": MODULE / name for name in module}
    files |= {f"{FOLDER}/{name}": ROOT / name for name in library}
    return files


def version() -> str:
    text = (ROOT / "RadioGenomicsLib" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def build(out_folder: Path) -> Path:
    """Write RadioGenomics-slicer-<version>.zip into `out_folder`; its path."""
    sys.path.insert(0, str(ROOT))
    from RadioGenomicsLib.atomic import atomic_path

    files = package_files()
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"listed in a CMakeLists.txt but not here: {', '.join(missing)}")
    path = Path(out_folder) / f"RadioGenomics-slicer-{version()}.zip"
    with atomic_path(path) as partial:
        with zipfile.ZipFile(partial, "w") as archive:
            for name, source in sorted(files.items()):
                archive.writestr(_entry(name), source.read_bytes())
            archive.writestr(_entry(f"{FOLDER}/{INSTALL_FILE}"), INSTALL.format(version=version()))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder of the zip")
    path = build(parser.parse_args().out)
    print(f"{path} ({path.stat().st_size // 1024} KiB): unzip it and add its RadioGenomics "
          "folder in Slicer's Edit > Application Settings > Modules > Additional module paths")


if __name__ == "__main__":
    main()
