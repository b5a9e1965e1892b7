"""Property-based fuzzing of the readers: any bytes give a result or one InputError line.

Never another exception (a traceback for the user), never a memory blow-up: every
example runs under an address-space limit a little above what the process already
uses, so a header that makes a reader allocate gigabytes fails as MemoryError here.
Deterministic (derandomised) and short: a few hundred examples in all.
"""

from __future__ import annotations

import gzip
import json
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from RadioGenomicsLib.errors import InputError
from Testing.limits import memory_limit

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").exists(),
                                reason="the memory limit needs Linux")


def result_or_one_line(read, *args) -> None:
    with memory_limit():
        try:
            read(*args)
        except InputError as error:
            assert "\n" not in str(error), str(error)


def write(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = folder / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- strategies

CELL = st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=12)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.text(max_size=8), inner, max_size=4), max_leaves=12)


def table(columns: list[str], separator: str):
    header = st.lists(st.sampled_from(columns) | CELL, min_size=1, max_size=6)
    rows = st.lists(st.lists(CELL | st.sampled_from(["1", "-2", "nan", "1e400", "", "TCGA-02-0001"]),
                             max_size=6), max_size=5)
    return st.builds(lambda h, r: "\n".join(separator.join(x) for x in [h, *r]).encode(),
                     header, rows)


# ---------------------------------------------------------------- the readers

@FUZZ
@given(st.one_of(st.binary(max_size=600),
                 table(["patient_id", "ct", "t1", "flair", "segmentation", "label"], ",")))
def test_manifest_reader(data):
    from RadioGenomicsLib.cohort import validate_cohort

    result_or_one_line(validate_cohort, write(data, "cohort.csv"))


@FUZZ
@given(st.one_of(st.binary(max_size=600), table(["patient_id", "ENSG00000141510.18"], "\t")),
       st.one_of(st.none(), st.binary(max_size=200),
                 table(["gene_id", "gene_name", "gene_type"], "\t")))
def test_expression_matrix_reader(matrix, sidecar):
    from RadioGenomicsLib.expression import genes_path, read_matrix

    path = write(matrix, "matrix.tsv")
    if sidecar is not None:
        genes_path(path).write_bytes(sidecar)
    result_or_one_line(read_matrix, path)


@FUZZ
@given(st.binary(max_size=800), st.sampled_from(["counts.tsv", "sheet.tsv", "table.csv"]))
def test_star_sample_sheet_and_table_readers(data, name):
    from RadioGenomicsLib import gdc
    from RadioGenomicsLib.expression import build_matrix

    path = write(data, name)
    read = {"counts.tsv": gdc.read_star_counts, "sheet.tsv": gdc.read_sample_sheet,
            "table.csv": lambda p: build_matrix(p, drop_median_zero_genes=False)}[name]
    result_or_one_line(read, path)


RECIPE_KEYS = ["name", "base", "model", "preprocessing", "training", "target", "markers",
               "folds", "size", "hidden_size", "top_k", "learning_rate", "value"]


@FUZZ
@given(st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(RECIPE_KEYS), JSON, max_size=4).map(
        lambda d: json.dumps(d).encode()),
    st.dictionaries(st.sampled_from(["model", "preprocessing", "training", "target"]),
                    st.dictionaries(st.sampled_from(RECIPE_KEYS + ["max_slices", "epochs", "seed",
                                                                   "image_size", "region"]),
                                    JSON, max_size=3), max_size=3).map(
        lambda d: json.dumps(d).encode())))
def test_recipe_and_model_settings_readers(data):
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.training.recipe import load_recipe

    path = write(data, "recipe.json")
    result_or_one_line(load_recipe, path)
    result_or_one_line(ModelConfig.load, path)


@pytest.fixture(scope="module")
def bundle_metadata(tmp_path_factory) -> tuple[Path, dict]:
    import pandas as pd

    from RadioGenomicsLib.bundle import make_untrained_bundle
    from RadioGenomicsLib.model import ModelConfig
    from RadioGenomicsLib.preprocess import PreprocessSettings

    tiny = ModelConfig(name="tiny", resnet_width=8, resnet_layers=(1, 1, 1), norm_groups=8,
                       hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, top_k=(1,))
    genes = pd.DataFrame({"gene_id": ["G1", "G2"], "gene_name": ["A", "B"]})
    path = make_untrained_bundle(tmp_path_factory.mktemp("fuzz") / "b", tiny, ["ct"], genes,
                                 PreprocessSettings().to_dict()).path
    return path, json.loads((path / "metadata.json").read_text())


def _mutated(document: dict, where: list[str], value) -> bytes:
    document = json.loads(json.dumps(document))
    target = document
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    return json.dumps(document, allow_nan=True).encode()


METADATA_PATHS = [["format_version"], ["channels"], ["folds"], ["weights"], ["target"],
                  ["preprocessing"], ["preprocessing", "size"], ["preprocessing", "region"],
                  ["model"], ["model", "hidden_size"], ["model", "top_k"],
                  ["model", "image_size"], ["training_cohort"]]


@FUZZ
@given(st.data())
def test_bundle_metadata_reader(bundle_metadata, data):
    from RadioGenomicsLib.bundle import load_bundle

    path, document = bundle_metadata
    raw = data.draw(st.one_of(
        st.binary(max_size=300),
        st.builds(lambda where, value: _mutated(document, where, value),
                  st.sampled_from(METADATA_PATHS), JSON)))
    copy = write(b"", "unused").parent / "b"
    copy.mkdir()
    for file in path.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    (copy / "metadata.json").write_bytes(raw)
    result_or_one_line(load_bundle, copy, False)
    result_or_one_line(_card_text, copy)  # the stdlib card the Slicer module shows


def _card_text(path: Path) -> str:
    from RadioGenomicsLib.card import card_text, read_card

    return card_text(read_card(path))


# ---------------------------------------------------------------- image headers

def _nifti_bytes(shape=(4, 5, 6)) -> bytes:
    import nibabel

    image = nibabel.Nifti1Image(np.zeros(shape, np.int16), np.eye(4))
    return image.header.binaryblock + b"\0" * 4 + np.zeros(shape, np.int16).tobytes()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), max_size=8),
       st.integers(0, 400), st.booleans(), st.binary(max_size=64))
def test_nifti_header_checks(changes, cut, packed, tail):
    from RadioGenomicsLib.imaging import read_volume

    data = bytearray(_nifti_bytes())
    for index, value in changes:  # dims, data type, pixdim, vox_offset, ... at random
        data[index] = value
    data = bytes(data[: len(data) - cut]) + tail
    path = write(gzip.compress(data) if packed else data, "image.nii.gz" if packed else "image.nii")
    result_or_one_line(read_volume, path)


NRRD_TYPES = ["uint8", "short", "float", "double", "int64", "block", "nonsense"]


@FUZZ
@given(st.lists(st.integers(-2, 2**40), min_size=1, max_size=4), st.sampled_from(NRRD_TYPES),
       st.sampled_from(["raw", "gzip", "bzip2", "ascii", "hex"]),
       st.sampled_from(["(1,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,1,0) (0,0,1)",
                        "(nan,0,0) (0,1,0) (0,0,1)", "none (1,0,0) (0,1,0)", "(1,0) (0,1)"]),
       st.binary(max_size=400))
def test_nrrd_header_checks(sizes, kind, encoding, directions, body):
    from RadioGenomicsLib.imaging import read_volume

    header = (f"NRRD0004\ntype: {kind}\ndimension: {len(sizes)}\n"
              f"sizes: {' '.join(map(str, sizes))}\nspace: left-posterior-superior\n"
              f"space directions: {directions}\nencoding: {encoding}\n\n").encode()
    result_or_one_line(read_volume, write(header + body, "image.nrrd"))


@FUZZ
@given(st.binary(max_size=500), st.sampled_from(["image.nii", "image.nii.gz", "image.nrrd",
                                                 "segment.seg.nrrd"]))
def test_any_bytes_as_an_image(data, name):
    from RadioGenomicsLib.headers import check_image_file

    result_or_one_line(check_image_file, write(data, name))
