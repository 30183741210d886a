"""A private Orthanc PACS for tests (stack-notes section 1): own free ports, a generated
single JSON config, remote access off, authentication on, our AET registered, DICOMweb."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.integration.helpers import free_port, require_binary, stop_group

USER, PASSWORD = "medsec-test", "orthanc-test-pass"
SCU_AET = "MEDSECTEST"
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass(frozen=True)
class Orthanc:
    http_port: int
    dicom_port: int
    scu_port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def upload(self, paths: list[Path]) -> None:
        for path in paths:
            answer = requests.post(f"{self.url}/instances", data=path.read_bytes(),
                                   headers={"Content-Type": "application/dicom"},
                                   auth=(USER, PASSWORD), timeout=30)
            assert answer.status_code == 200 and answer.json()["Status"] == "Success", answer.text


@contextlib.contextmanager
def orthanc_server(folder: Path) -> Iterator[Orthanc]:
    """Start Orthanc with its own config in ``folder``; stop it (process group) on exit."""
    binary = require_binary("Orthanc")
    if not Path(PLUGIN).is_file():
        import pytest

        message = f"{PLUGIN} missing (Debian package orthanc-dicomweb)"
        if os.environ.get("MEDSEC_REQUIRE_INFRA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    server = Orthanc(free_port(), free_port(), free_port(), folder)
    storage = folder / "orthanc-db"
    config = {
        "Name": "MEDSECTESTPACS", "StorageDirectory": str(storage),
        "IndexDirectory": str(storage), "HttpPort": server.http_port,
        "DicomPort": server.dicom_port, "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD}, "Plugins": [PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                     "WadoRoot": "/wado", "Host": f"127.0.0.1:{server.http_port}",
                     "Ssl": False},
        "DicomModalities": {"medsec": {"AET": SCU_AET, "Host": "127.0.0.1",
                                       "Port": server.scu_port}},
        "DicomCheckModalityHost": True, "DicomAlwaysAllowStore": False,
        "SaveJobs": False, "StableAge": 1,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{server.url}/system", auth=(USER, PASSWORD),
                                timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not start:\n"
                                   + (folder / "orthanc.log").read_text()[-3000:])
            time.sleep(0.1)
        plugins = requests.get(f"{server.url}/plugins", auth=(USER, PASSWORD), timeout=5).json()
        assert "dicom-web" in plugins, plugins
        yield server
    finally:
        stop_group(proc, timeout=20)
        log.close()
