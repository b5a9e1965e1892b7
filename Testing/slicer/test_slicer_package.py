"""The module without a Slicer build: the zip of `make slicer-package`, the module's
search for its library (in the zip's layout and in a source checkout), the PYTHONPATH its
children get, and the offline install of the Python packages from a folder of wheels.
No Slicer needed: the module's pure-Python parts are run in plain Python processes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "RadioGenomics"))
sys.path.insert(0, str(ROOT / "RadioGenomics" / "Packaging"))
import slicer_package  # noqa: E402
from RadioGenomicsLogic.library import child_environment, find_library  # noqa: E402
from RadioGenomicsLogic.requirements import constraints_text, pip_arguments  # noqa: E402

# in a Python without site-packages (-S: the test venv's editable install of the library
# is not seen), the module's way to its library, then a child's, each printing where
# RadioGenomicsLib came from; RadioGenomicsLib.card is what the panel reads first
PROBE = """
import json, os, subprocess, sys
from pathlib import Path
module = Path(sys.argv[1])
sys.path.insert(0, str(module))
from RadioGenomicsLogic.library import child_environment, ensure_library
folder = ensure_library(module)
import RadioGenomicsLib.card
child = subprocess.run([sys.executable, "-S", "-c", "import RadioGenomicsLib.card as c; print(c.__file__)"],
                       env=child_environment(folder, {}), capture_output=True, text=True, cwd="/")
print(json.dumps([str(folder), RadioGenomicsLib.card.__file__, child.stdout.strip(), child.stderr]))
"""


def where_the_module_finds_its_library(module_folder: Path) -> list[str]:
    import json

    result = subprocess.run([sys.executable, "-S", "-c", PROBE, str(module_folder)],
                            capture_output=True, text=True, cwd="/", timeout=60, env={})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> tuple[Path, Path]:
    """The zip, built into a temporary folder, and where it was unzipped."""
    folder = tmp_path_factory.mktemp("package")
    path = slicer_package.build(folder / "dist")
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder / "unzipped")
    return path, folder / "unzipped"


def test_package_holds_the_module_with_its_library_inside(package):
    path, _ = package
    assert path.name == f"RadioGenomics-slicer-{slicer_package.version()}.zip"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        install = archive.read("RadioGenomics/INSTALL.txt").decode()
        for name in ("RadioGenomics/RadioGenomics.py", "RadioGenomics/RadioGenomicsLogic/library.py",
                     "RadioGenomics/RadioGenomicsLib/run.py",
                     "RadioGenomics/RadioGenomicsLib/resources/gencode_v36_genes.tsv.gz"):
            assert archive.read(name) == (ROOT / name.removeprefix("RadioGenomics/")
                                          if "Lib/" in name else ROOT / name).read_bytes(), name
    assert {"RadioGenomics/Resources/requirements.txt", "RadioGenomics/Resources/requirements-torch.txt",
            "RadioGenomics/Resources/UI/RadioGenomics.ui", "RadioGenomics/README.md"} <= names
    library = {n for n in names if n.startswith("RadioGenomics/RadioGenomicsLib/")}
    on_disk = {f"RadioGenomics/{p.relative_to(ROOT)}" for p in (ROOT / "RadioGenomicsLib").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert library == on_disk
    # Slicer loads every .py file at the top of a module folder as a module: only one there
    assert [n for n in names if n.count("/") == 1 and n.endswith(".py")] == ["RadioGenomics/RadioGenomics.py"]
    assert not [n for n in names if "/Web/" in n or "/Testing/" in n or "/Packaging/" in n]
    assert "Additional module paths" in install and "RADIOGENOMICS_WHEELS" in install
    assert "--python-version 3.12" in install and "--platform manylinux_2_28_x86_64" in install


def test_package_is_the_same_for_the_same_sources(package, tmp_path):
    again = slicer_package.build(tmp_path)
    assert again.read_bytes() == package[0].read_bytes()


def test_unzipped_module_finds_the_library_inside_it(package):
    module = package[1] / "RadioGenomics"
    assert find_library(module) == module
    folder, card, child_card, _ = where_the_module_finds_its_library(module)
    assert Path(folder) == module
    assert Path(card).is_relative_to(module) and Path(child_card).is_relative_to(module)


def test_source_checkout_module_finds_the_library_one_folder_up():
    module = ROOT / "RadioGenomics"
    assert find_library(module) == ROOT
    folder, card, child_card, _ = where_the_module_finds_its_library(module)
    assert Path(folder) == ROOT and Path(child_card) == Path(card) == ROOT / "RadioGenomicsLib" / "card.py"


def test_missing_library_is_named(tmp_path):
    (tmp_path / "RadioGenomics").mkdir()
    assert find_library(tmp_path / "RadioGenomics") is None
    result = subprocess.run([sys.executable, "-S", "-c", PROBE, str(tmp_path / "RadioGenomics")],
                            capture_output=True, text=True, cwd="/", timeout=60,
                            env={"PYTHONPATH": str(ROOT / "RadioGenomics")})
    assert result.returncode != 0
    assert f"RadioGenomicsLib is neither in {tmp_path / 'RadioGenomics'} nor in {tmp_path}" in result.stderr
    assert "Additional module paths" in result.stderr


def test_child_pythonpath_puts_the_library_first():
    assert child_environment(Path("/opt/rg"), {})["PYTHONPATH"] == "/opt/rg"
    assert child_environment(Path("/opt/rg"), {"PYTHONPATH": "/x"})["PYTHONPATH"] == f"/opt/rg{':' if sys.platform != 'win32' else ';'}/x"


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A real (if tiny) wheel, built by pip from a one-module project."""
    project = folder / "project"
    (project / name).mkdir(parents=True)
    (project / name / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (project / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n')
    wheels = folder / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "-w", str(wheels), str(project)], check=True, timeout=120)
    return wheels


def test_offline_install_from_a_folder_of_wheels(tmp_path):
    """The arguments the module hands pip with RADIOGENOMICS_WHEELS set install from the
    folder alone (no index: a package not in it fails, rather than reaching the internet)."""
    wheels = _wheel(tmp_path, "rg_offline_probe", "1.2")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(constraints_text())
    assert "numpy==" in constraints.read_text() and "torch==" in constraints.read_text()
    target = tmp_path / "site"

    def install(*requirements: str) -> subprocess.CompletedProcess:
        arguments = pip_arguments(list(requirements), constraints, str(wheels))
        return subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target),
                               *arguments], capture_output=True, text=True, timeout=120)

    assert install("rg_offline_probe>=1,<2").returncode == 0
    assert (target / "rg_offline_probe" / "__init__.py").read_text() == "VERSION = '1.2'\n"
    refused = install("rg_offline_probe>=2")
    assert refused.returncode != 0 and "No matching distribution" in refused.stderr
    assert pip_arguments(["a>=1"], constraints, None) == ["a>=1", "-c", str(constraints)]
