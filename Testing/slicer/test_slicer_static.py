"""Static checks of the Slicer extension, without Slicer: the .ui, the CMake lists, pins.

A widget name the code uses but the .ui lacks, or a library file the CMake list forgets,
only shows up inside Slicer (an AttributeError, or a module missing from the package);
these checks catch both here.
"""

from __future__ import annotations

import ast
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "RadioGenomics"
MODULE_SOURCE = MODULE / "RadioGenomics.py"
UI_FILE = MODULE / "Resources" / "UI" / "RadioGenomics.ui"


def cmake_list(cmake_file: Path, variable: str) -> list[str]:
    """The entries of `set(VARIABLE ...)` in a CMakeLists.txt, ${MODULE_NAME} expanded."""
    text = cmake_file.read_text()
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{cmake_file}: no set({variable} ...)"
    module_name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text)
    entries = match.group(1).split()
    return [e.replace("${MODULE_NAME}", module_name.group(1) if module_name else "") for e in entries]


def on_disk(folder: Path, python: bool) -> list[str]:
    return sorted(str(p.relative_to(folder.parent)) for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and (p.suffix == ".py") == python)


def ui_widgets() -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ElementTree.parse(UI_FILE).getroot().iter("widget")}


def module_tree() -> ast.Module:
    return ast.parse(MODULE_SOURCE.read_text())


def test_ui_file_is_a_qt_designer_form():
    root = ElementTree.parse(UI_FILE).getroot()  # raises on malformed XML
    assert root.tag == "ui"
    assert root.find("widget").get("class") == "qMRMLWidget"
    declared = {w.findtext("class") for w in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    qt_classes = {c for c in used if c.startswith("Q")}
    assert used - qt_classes <= declared, "custom widget classes without a <customwidget> entry"


def test_every_widget_the_code_uses_is_in_the_ui():
    used = {node.attr for node in ast.walk(module_tree())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"}
    assert used, "no self.ui.NAME found: the check would prove nothing"
    assert sorted(used - set(ui_widgets())) == []


def parameter_fields() -> set[str]:
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in RadioGenomics.py")


def test_every_ui_parameter_binding_names_a_parameter():
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.findtext("string")
    assert len(bound) >= 5
    assert {w: p for w, p in bound.items() if p not in parameter_fields()} == {}


def test_module_files_are_listed_in_its_cmake():
    cmake = MODULE / "CMakeLists.txt"
    scripts = cmake_list(cmake, "MODULE_PYTHON_SCRIPTS")
    # Web/ is the browser viewer (`radiogenomics viewer`) and Packaging/ builds the zip of
    # `make slicer-package`: neither is part of the Slicer extension
    module_python = sorted(str(p.relative_to(MODULE)) for p in MODULE.rglob("*.py")
                           if not {"Testing", "Web", "Packaging", "__pycache__"} & set(p.parts))
    assert sorted(scripts) == module_python
    for resource in cmake_list(cmake, "MODULE_PYTHON_RESOURCES"):
        assert (MODULE / resource).is_file(), resource
    assert (MODULE / "Testing" / "Python" / "RadioGenomicsGlueTest.py").is_file()


def test_every_library_file_is_packaged():
    """An unlisted file is silently left out of the extension: list each one."""
    cmake = ROOT / "CMakeLists.txt"
    library = ROOT / "RadioGenomicsLib"
    missing = sorted(set(on_disk(library, True)) - set(cmake_list(cmake, "RADIOGENOMICSLIB_SCRIPTS")))
    assert missing == [], f"add to RADIOGENOMICSLIB_SCRIPTS in CMakeLists.txt: {missing}"
    stale = sorted(set(cmake_list(cmake, "RADIOGENOMICSLIB_SCRIPTS")) - set(on_disk(library, True)))
    assert stale == [], f"listed in CMakeLists.txt but gone: {stale}"
    assert sorted(cmake_list(cmake, "RADIOGENOMICSLIB_RESOURCES")) == on_disk(library, False)


def library_modules_imported_by_the_module() -> set[str]:
    names = set()
    for path in [MODULE_SOURCE, *MODULE.glob("RadioGenomicsLogic/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("RadioGenomicsLib"):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("RadioGenomicsLib")}
    return names


def test_library_modules_the_module_imports_exist_and_are_listed():
    listed = set(cmake_list(ROOT / "CMakeLists.txt", "RADIOGENOMICSLIB_SCRIPTS"))
    imported = library_modules_imported_by_the_module()
    assert {"RadioGenomicsLib.atomic", "RadioGenomicsLib.bundle"} <= imported
    for module in imported:
        path = module.replace(".", "/")
        assert f"{path}.py" in listed or f"{path}/__init__.py" in listed, module


@pytest.mark.parametrize("folder", ["RadioGenomics/RadioGenomicsLogic", "RadioGenomicsLib"])
def test_no_slicer_application_or_qt_import(folder):
    """The glue and the library run without the Slicer application (pytest, PythonSlicer)."""
    offenders = []
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in modules
                          if m.split(".")[0] in ("slicer", "qt", "ctk", "PythonQt")]
    assert offenders == []


def test_module_requirements_admit_the_project_pins():
    """Two requirements files for Slicer's Python (the light runtime's, and what PyTorch
    needs beside it): ranges (they must resolve beside Slicer and its other extensions)
    that admit every version pyproject.toml pins, onnxruntime's from the runtime extra."""
    import sys

    from packaging.requirements import Requirement

    sys.path.insert(0, str(MODULE))
    from RadioGenomicsLogic.requirements import KEPT_AS_INSTALLED, requirements, requirements_file

    light = {r.name.lower(): r for r in requirements()}
    with_torch = {r.name.lower(): r for r in requirements(requirements_file(torch=True))}
    assert not set(light) & set(with_torch)
    module = light | with_torch
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    project = [Requirement(d) for d in [*pyproject["dependencies"],
                                        *pyproject["optional-dependencies"]["runtime"]]]
    needed = {r.name.lower(): r for r in project if r.name not in KEPT_AS_INSTALLED}
    needed.pop("openvino")  # faster where installed, but 180 MB: ONNX Runtime suffices
    assert sorted(set(needed) - set(module)) == []
    for name, pinned in needed.items():
        version = next(iter(pinned.specifier)).version
        assert module[name].specifier.contains(version), (name, str(module[name].specifier), version)
        assert not any(spec.operator == "==" for spec in module[name].specifier), name
    assert sorted(set(module) - set(needed)) == ["psutil"]
    # the light runtime's packages do not pull PyTorch: MONAI (which imports torch) and
    # einops (its blocks) are needed only beside it
    assert sorted(with_torch) == ["einops", "monai"] and "onnxruntime" in light


def test_minimum_slicer_version_is_declared_alike():
    import sys

    sys.path.insert(0, str(MODULE))
    from RadioGenomicsLogic.requirements import MINIMUM_SLICER

    version = ".".join(map(str, MINIMUM_SLICER))
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert f'set(RADIOGENOMICS_MINIMUM_SLICER_VERSION "{version}")' in cmake
    assert f"Slicer {version}" in (MODULE / "README.md").read_text()
    assert f"Slicer {version}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("icon", ["RadioGenomics/Resources/Icons/RadioGenomics.png",
                                  "Resources/RadioGenomics.png"])
def test_icons_are_128_pixel_pngs(icon):
    with Image.open(ROOT / icon) as image:
        assert (image.format, image.size) == ("PNG", (128, 128))


def test_extension_metadata():
    text = (ROOT / "CMakeLists.txt").read_text()
    for field, pattern in [("EXTENSION_CATEGORY", r'"Quantification"'),
                           ("EXTENSION_DEPENDS", r'"PyTorch"'),
                           ("EXTENSION_HOMEPAGE", r'"https://'),
                           ("EXTENSION_ICONURL", r'"https://.*\.png"'),
                           ("EXTENSION_SCREENSHOTURLS", r'"https://'),
                           ("EXTENSION_CONTRIBUTORS", r'"'),
                           ("EXTENSION_DESCRIPTION", r'"')]:
        assert re.search(rf"set\({field} {pattern}", text), field
    assert "add_subdirectory(RadioGenomics)" in text


def test_every_screenshot_url_is_a_committed_png():
    """The Extensions Catalog shows EXTENSION_SCREENSHOTURLS (raw GitHub URLs of this
    repository, space-separated): each must name a PNG that is in the repository."""
    import subprocess

    text = (ROOT / "CMakeLists.txt").read_text()
    urls = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]*)"\)', text).group(1).split()
    icon = re.search(r'set\(EXTENSION_ICONURL "([^"]*)"\)', text).group(1)
    assert urls
    prefix = "https://raw.githubusercontent.com/RadioGenomics/RadioGenomics/main/"
    listed = subprocess.run(["git", "ls-files", "Resources", "RadioGenomics/Resources"], cwd=ROOT,
                            capture_output=True, text=True)
    committed = set(listed.stdout.splitlines()) if listed.returncode == 0 else None  # a tarball
    for url in [*urls, icon]:
        assert url.startswith(prefix), url
        path = url.removeprefix(prefix)
        assert path in committed if committed is not None else (ROOT / path).is_file(), \
            f"{path}: not committed"
        with Image.open(ROOT / path) as image:
            assert image.format == "PNG" and min(image.size) >= 128, (path, image.size)
