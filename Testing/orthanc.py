"""A real Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) for tests: started on free
loopback ports with its own storage folder and a user, stopped after."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import requests

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "radiologist", "not-on-the-command-line"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Orthanc:
    http: str  # http://127.0.0.1:PORT

    @property
    def dicomweb(self) -> str:
        return f"{self.http}/dicom-web"

    def get(self, path: str) -> requests.Response:
        response = requests.get(self.http + path, auth=(USER, PASSWORD), timeout=30)
        response.raise_for_status()
        return response

    def upload(self, files) -> None:
        for file in files:
            response = requests.post(f"{self.http}/instances", data=Path(file).read_bytes(),
                                     auth=(USER, PASSWORD), timeout=30)
            response.raise_for_status()


@contextmanager
def running_orthanc(folder: Path, lua_scripts: Sequence[Path] = ()) -> Iterator[Orthanc]:
    program = shutil.which("Orthanc")
    if program is None or not DICOMWEB_PLUGIN.exists():
        raise RuntimeError("Orthanc or its DICOMweb plugin is missing: `make testdata` "
                           "installs Debian's orthanc and orthanc-dicomweb")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "RadioGenomicsTest", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"), "HttpPort": port,
        "DicomServerEnabled": False, "DicomPort": free_port(), "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpThreadsCount": 4, "ConcurrentJobs": 1, "SaveJobs": False,
        "LuaScripts": [str(script) for script in lua_scripts],
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([program, str(folder / "orthanc.json")], stdout=log,
                               stderr=subprocess.STDOUT)
    server = Orthanc(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.get("/system")
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Orthanc did not start: "
                                       + (folder / "orthanc.log").read_text()[-2000:])
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
