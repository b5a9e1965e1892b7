"""Bundle integrity (every file in manifest.json) and provenance (ed25519 signatures)."""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest

from RadioGenomicsLib.bundle import load_bundle, make_untrained_bundle
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.integrity import (MANIFEST_FILE, REQUIRE_SIGNATURE_ENV, SIGNATURE_FILE,
                                        TRUSTED_KEYS_ENV, generate_key, sign_bundle,
                                        write_manifest)
from RadioGenomicsLib.model import ModelConfig
from RadioGenomicsLib.preprocess import PreprocessSettings

TINY = ModelConfig(name="tiny", resnet_width=8, resnet_layers=(1, 1, 1), norm_groups=8,
                   hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32, top_k=(1, 2))


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(tmp_path / "trusted"))
    monkeypatch.delenv(REQUIRE_SIGNATURE_ENV, raising=False)
    genes = pd.DataFrame({"gene_id": ["ENSG1", "ENSG2", "ENSG3"],
                          "gene_name": ["EGFR", "MGMT", "IDH1"]})
    return make_untrained_bundle(tmp_path / "b", TINY, ["ct"], genes,
                                 PreprocessSettings().to_dict(), folds=2).path


def refused(bundle, *words):
    with pytest.raises(InputError) as error:
        load_bundle(bundle)
    text = str(error.value)
    assert "\n" not in text
    for word in words:
        assert word in text, text
    return text


def test_every_file_is_listed_and_a_clean_bundle_loads(bundle):
    listed = json.loads((bundle / MANIFEST_FILE).read_text())["files"]
    assert sorted(listed) == ["fold_0.safetensors", "fold_1.safetensors", "genes.tsv",
                              "metadata.json"]
    loaded = load_bundle(bundle)
    assert loaded.integrity.manifest and loaded.integrity.provenance == "unsigned"


def test_changed_channels_are_refused(bundle, run_cli):
    path = bundle / "metadata.json"
    path.write_text(path.read_text().replace('"ct"', '"t1"'))
    refused(bundle, "metadata.json: checksum mismatch")
    code, _, err = run_cli("predict", "--model", bundle, "--image", f"t1={bundle}/x.nii.gz",
                           "--segmentation", bundle / "s.nii.gz", "--out", bundle.parent / "g.csv")
    assert code == 2 and "metadata.json: checksum mismatch" in err


def test_swapped_gene_names_are_refused(bundle):
    path = bundle / "genes.tsv"
    path.write_text(path.read_text().replace("EGFR", "TMP").replace("MGMT", "EGFR"))
    refused(bundle, "genes.tsv: checksum mismatch")


def test_report_files_are_covered_and_added_files_not_trusted(bundle):
    (bundle / "report").mkdir()
    (bundle / "report" / "summary.json").write_text('{"patients": 10}')
    write_manifest(bundle)
    assert load_bundle(bundle).integrity.files[-1] == "report/summary.json"
    (bundle / "report" / "summary.json").write_text('{"patients": 1000}')
    refused(bundle, "report/summary.json: checksum mismatch")
    (bundle / "report" / "summary.json").unlink()
    refused(bundle, "summary.json: missing (listed in manifest.json)")


def test_a_bundle_from_before_manifests_is_readable_with_a_note(bundle, run_cli):
    (bundle / MANIFEST_FILE).unlink()
    loaded = load_bundle(bundle)
    assert not loaded.integrity.manifest and "only the weights" in loaded.integrity.note
    code, out, _ = run_cli("info", bundle)
    assert code == 0 and "written before checksum manifests" in out and "unsigned" in out


def test_info_checks_that_the_weights_fit_the_model(bundle, run_cli):
    code, out, _ = run_cli("info", bundle)
    assert code == 0 and "shapes fit the model" in out and "4 files checked" in out
    genes = bundle / "genes.tsv"
    genes.write_text("\n".join(genes.read_text().splitlines()[:3]) + "\n")  # 2 genes, 3 outputs
    write_manifest(bundle)
    code, out, err = run_cli("info", bundle)
    assert code == 2 and "fold_0.safetensors: weights do not fit the model" in err
    assert "head.conv" in err and "[3" in err and "[2" in err


def sign(bundle, tmp_path, name="lab", trust=True):
    key, public = generate_key(tmp_path / f"{name}_key")
    if trust:
        (tmp_path / "trusted").mkdir(exist_ok=True)
        public.rename(tmp_path / "trusted" / f"{name}.pub")
    sign_bundle(bundle, key)
    return key


def test_a_signed_bundle_names_its_signer(bundle, tmp_path, run_cli):
    key, public = generate_key(tmp_path / "site_key")
    (tmp_path / "trusted").mkdir()
    public.rename(tmp_path / "trusted" / "Neuro-Oncology Lab.pub")
    code, out, err = run_cli("sign", bundle, "--key", key)
    assert code == 0, err
    assert load_bundle(bundle).integrity.signer == "Neuro-Oncology Lab"
    code, out, _ = run_cli("info", bundle)
    assert code == 0 and "signed by Neuro-Oncology Lab" in out


def test_a_bad_signature_is_always_refused(bundle, tmp_path):
    sign(bundle, tmp_path)
    path = bundle / SIGNATURE_FILE
    document = json.loads(path.read_text())
    forged = bytearray(base64.b64decode(document["signature"]))
    forged[5] ^= 1
    path.write_text(json.dumps({**document, "signature": base64.b64encode(forged).decode()}))
    refused(bundle, "signature.json: bad signature")


def test_edits_with_a_new_manifest_break_the_signature(bundle, tmp_path):
    sign(bundle, tmp_path)
    path = bundle / "genes.tsv"
    path.write_text(path.read_text().replace("EGFR", "KRAS"))
    write_manifest(bundle)  # a careful forger
    refused(bundle, "bad signature")


def test_untrusted_signers_and_unsigned_bundles_when_a_site_requires_signatures(
        bundle, tmp_path, monkeypatch):
    monkeypatch.setenv(REQUIRE_SIGNATURE_ENV, "1")
    refused(bundle, "unsigned, and this site requires signed bundles")
    sign(bundle, tmp_path, "stranger", trust=False)
    refused(bundle, "signed by a key not in the trusted keys", "SHA256:")
    monkeypatch.delenv(REQUIRE_SIGNATURE_ENV)
    assert "not in the trusted keys" in load_bundle(bundle).integrity.provenance
    sign(bundle, tmp_path, "lab")
    monkeypatch.setenv(REQUIRE_SIGNATURE_ENV, "1")
    assert load_bundle(bundle).integrity.signer == "lab"


def test_signing_needs_a_manifest_and_a_real_key(bundle, tmp_path, run_cli):
    (tmp_path / "junk.pem").write_text("not a key")
    code, _, err = run_cli("sign", bundle, "--key", tmp_path / "junk.pem")
    assert code == 2 and "not an unencrypted private key" in err
    key, _ = generate_key(tmp_path / "k")
    (bundle / MANIFEST_FILE).unlink()
    code, _, err = run_cli("sign", bundle, "--key", key)
    assert code == 2 and "has no manifest.json" in err
    code, _, err = run_cli("sign", "--generate-key", key)
    assert code == 2 and "exists" in err
