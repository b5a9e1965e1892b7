"""A PACS over DICOMweb (dicomweb-client): fetch a study's image series (QIDO-RS, WADO-RS)
and store results back (STOW-RS).

Credentials come from the environment (RADIOGENOMICS_PACS_USER and
RADIOGENOMICS_PACS_PASSWORD) or from a file named by RADIOGENOMICS_PACS_CREDENTIALS that
holds one line `user:password` and that only its owner may read (mode 0600); never from
the command line (a URL with `user:password@` is refused), and never printed.
Every failure to talk to the server (down, refusing, unknown study) is an InputError
naming the server: the CLI prints one line and exits 2.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlsplit

import pydicom

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.outputs import mark_complete
from RadioGenomicsLib.errors import InputError

USER_ENV, PASSWORD_ENV = "RADIOGENOMICS_PACS_USER", "RADIOGENOMICS_PACS_PASSWORD"
CREDENTIALS_FILE_ENV = "RADIOGENOMICS_PACS_CREDENTIALS"
# the series a model can read, and the tumour segmentations fetched beside them (into
# STUDY/segmentations/); SR, secondary captures, parametric maps are left on the server
IMAGE_MODALITIES = ("CT", "MR", "PT")
SEGMENTATIONS = "segmentations"
RESULTS_MANUFACTURER = "RadioGenomics"  # our own SEGs are results, never taken as input
TIMEOUT_S = 60.0

# DICOM JSON tags (PS3.18 F.2) of the attributes a search returns
SERIES_UID, MODALITY, DESCRIPTION, SOP_UID = "0020000E", "00080060", "0008103E", "00080018"
STUDY_UID, PATIENT_ID, PATIENT_NAME = "0020000D", "00100020", "00100010"
STUDY_DATE, STUDY_DESCRIPTION, MODALITIES = "00080020", "00081030", "00080061"


def read_credentials() -> tuple[str, str] | None:
    """(user, password) from the environment or the credentials file; None for none."""
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user or password:
        if not (user and password):
            raise InputError(None, f"set both {USER_ENV} and {PASSWORD_ENV}, or neither")
        return user, password
    file = os.environ.get(CREDENTIALS_FILE_ENV)
    if not file:
        return None
    path = Path(file)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(path, f"cannot read the PACS credentials ({error.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(path, f"other users may read these PACS credentials (mode "
                               f"{stat.S_IMODE(mode):04o}): chmod 600 it")
    user, sep, password = text.strip().partition(":")
    if not (sep and user and password) or "\n" in text.strip():
        raise InputError(path, "must hold one line user:password")
    return user, password


def _client(url: str):
    from dicomweb_client import DICOMwebClient
    from dicomweb_client.session_utils import create_session, create_session_from_user_pass

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(None, "--pacs: give the DICOMweb root as http(s)://host[:port]/path")
    if parts.username or parts.password:  # never echo the URL: it holds a secret
        raise InputError(None, f"--pacs: no credentials in the URL; set {USER_ENV} and "
                               f"{PASSWORD_ENV}, or {CREDENTIALS_FILE_ENV}")
    credentials = read_credentials()
    session = create_session_from_user_pass(*credentials) if credentials else create_session()
    client = DICOMwebClient(url, session=session, timeout=TIMEOUT_S)
    # a busy server (429, 503) gets two more tries; a server that is down is said so in
    # ~1.5 s, not the library's default ~30 s of back-off
    client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=250)
    return client


@contextmanager
def _talking_to(url: str, doing: str) -> Iterator[None]:
    """Network and HTTP failures as one line naming the server and what was being done."""
    import requests

    try:
        yield
    except requests.ConnectionError:
        raise InputError(url, f"{doing}: cannot connect (server down or refusing "
                              "connections)") from None
    except requests.Timeout:
        raise InputError(url, f"{doing}: no answer within {TIMEOUT_S:.0f} s") from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        hint = (f" (check {USER_ENV}/{PASSWORD_ENV} or {CREDENTIALS_FILE_ENV})"
                if status in (401, 403) else "")
        raise InputError(url, f"{doing}: the server refused with HTTP {status}{hint}") from None


def _first(attributes: dict, tag: str) -> str:
    values = attributes.get(tag, {}).get("Value") or [""]
    return str(values[0])


@dataclass(frozen=True)
class StudySummary:
    uid: str
    patient_id: str
    patient_name: str
    date: str
    description: str
    modalities: str


def list_studies(url: str, limit: int = 100) -> list[StudySummary]:
    """The server's studies (QIDO-RS), for a face that lets people pick one."""
    client = _client(url)
    with _talking_to(url, "listing studies"):
        found = client.search_for_studies(limit=limit, fields=["ModalitiesInStudy",
                                                                "StudyDescription"])
    return [StudySummary(_first(s, STUDY_UID), _first(s, PATIENT_ID),
                         str((s.get(PATIENT_NAME, {}).get("Value") or [{}])[0]
                             .get("Alphabetic", "")),
                         _first(s, STUDY_DATE), _first(s, STUDY_DESCRIPTION),
                         "/".join(str(m) for m in s.get(MODALITIES, {}).get("Value", [])))
            for s in found]


@dataclass(frozen=True)
class FetchedSeries:
    uid: str
    modality: str
    description: str
    instances: int


def fetch_study(url: str, study_uid: str, folder: str | os.PathLike) -> list[FetchedSeries]:
    """Write the study's image series (CT, MR, PT) into the folder `folder` (replaced
    whole), one file per instance, and its DICOM SEGs into `folder`/segmentations."""
    from RadioGenomicsLib.progress import progress

    client = _client(url)
    with _talking_to(url, f"searching study {study_uid}"):
        found = client.search_for_series(study_instance_uid=study_uid)
    if not found:
        raise InputError(url, f"no study {study_uid} on this server")
    images = [s for s in found if _first(s, MODALITY) in IMAGE_MODALITIES]
    segmentations = [s for s in found if _first(s, MODALITY) == "SEG"]
    if not images:
        listed = ", ".join(sorted({_first(s, MODALITY) for s in found}))
        raise InputError(url, f"study {study_uid} holds no CT, MR or PT series (only {listed})")
    fetched = []
    with atomic_path(folder) as tmp:  # the whole study or nothing
        (tmp / SEGMENTATIONS).mkdir(parents=True)
        for series in progress(images + segmentations, "series from the PACS"):
            uid = _first(series, SERIES_UID)
            with _talking_to(url, f"fetching series {uid}"):
                instances = client.retrieve_series(study_uid, uid)
            into = tmp / SEGMENTATIONS if _first(series, MODALITY) == "SEG" else tmp
            for dataset in instances:
                dataset.save_as(into / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True)
            fetched.append(FetchedSeries(uid, _first(series, MODALITY),
                                         _first(series, DESCRIPTION), len(instances)))
        mark_complete(tmp, "predict")  # the study folder `predict --pacs` fetched into
    return fetched


def study_segmentation(folder: str | os.PathLike) -> Path:
    """The one tumour segmentation (DICOM SEG) fetched with a study, not counting the
    results RadioGenomics stored there earlier; an InputError when none or several."""
    folder = Path(folder)
    found = []
    for file in sorted((folder / SEGMENTATIONS).glob("*.dcm")):
        header = pydicom.dcmread(file, stop_before_pixels=True)
        if header.get("Manufacturer") != RESULTS_MANUFACTURER:
            labels = ", ".join(str(s.SegmentLabel) for s in header.get("SegmentSequence", []))
            found.append((file, f"{header.get('SeriesDescription', '')} ({labels})"))
    if len(found) == 1:
        return found[0][0]
    if not found:
        raise InputError(folder, "the study holds no DICOM SEG of the tumour: give "
                                 "--segmentation FILE")
    listed = "; ".join(f"{file.name} {what}" for file, what in found)
    raise InputError(folder / SEGMENTATIONS, f"the study holds {len(found)} DICOM SEGs, choose "
                                             f"one with --segmentation FILE: {listed}")


def _stored_uids(client, study_uid: str) -> set[str] | None:
    """SOP Instance UIDs the server holds in the study, or None when it cannot say."""
    import requests

    try:
        return {_first(i, SOP_UID) for i in client.search_for_instances(study_uid,
                                                                         get_remaining=True)}
    except requests.RequestException:
        return None


def store(url: str, files: Sequence[str | os.PathLike]) -> int:
    """STOW-RS the DICOM files in one request, then ask the server (QIDO-RS) which it holds:
    a server may answer "stored" for an instance that a filter dropped. Returns how many
    were stored; when not all were, the InputError says which were and which not."""
    client = _client(url)
    datasets = [pydicom.dcmread(f) for f in files]
    study_uids = {d.StudyInstanceUID for d in datasets}
    if len(study_uids) != 1:
        raise InputError(None, f"results of {len(study_uids)} studies: store one study at a time")
    study_uid = study_uids.pop()
    names = {d.SOPInstanceUID: Path(f).name for d, f in zip(datasets, files)}
    problem = None
    try:
        with _talking_to(url, f"storing {len(datasets)} results"):
            client.store_instances(datasets, study_instance_uid=study_uid)
    except InputError as error:
        problem = error.problem
    stored = _stored_uids(client, study_uid)
    if problem is None and stored is not None and set(names) <= stored:
        return len(names)
    if problem is None:
        kept = len(set(names) & stored) if stored is not None else "?"
        problem = f"the server kept {kept} of the {len(names)} results it was sent"
    raise InputError(url, f"{problem}; {_which(names, stored)}")


def _which(names: dict[str, str], stored: set[str] | None) -> str:
    if stored is None:
        return "could not ask the server which results it holds"
    kept = [name for uid, name in names.items() if uid in stored]
    missing = [name for uid, name in names.items() if uid not in stored]
    if not kept:
        return "none of the results was stored"
    return f"stored: {', '.join(kept)}; not stored: {', '.join(missing) or 'none'}"
