"""`medsec data pull` against a real private Orthanc (DICOMweb and DIMSE C-GET)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json

import numpy as np
import pytest

from medsec.data.dicom import read_dicom
from tests.dicom_factory import Identity, make_dataset, phantom_pixels, write, write_study_tree
from tests.integration.helpers import BIN, env_with, free_port, run
from tests.integration.orthanc import PASSWORD, SCU_AET, USER, orthanc_server

pytestmark = pytest.mark.integration

KEY = "pacs-integration-key-0123456789"
PATIENTS = [Identity(patient_name=f"Pacscanary^Person{i}", patient_id=f"PACSPID{i}7731",
                     birth_date=f"1961010{i}", accession=f"PACSACC{i}9913",
                     institution="Pacscanary Institute") for i in range(3)]
CANARIES = ["Pacscanary", "PACSPID", "PACSACC", "19610100", "19610101", "19610102"]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs")
    with orthanc_server(root / "orthanc") as server:
        paths = write_study_tree(root / "export", PATIENTS, per_study=2, size=24)
        us = make_dataset(phantom_pixels(0, 9, 24), Identity(patient_id="PACSPID97731",
                                                             patient_name="Pacscanary^Us"),
                          modality="US", study_description="NORMAL")
        paths.append(write(us, root / "export" / "us.dcm"))
        server.upload(paths)
        yield server, root


def _env(**extra):
    return env_with(MEDSEC_DEID_KEY=KEY, MEDSEC_PACS_USER=USER, MEDSEC_PACS_PASSWORD=PASSWORD,
                    **extra)


def _pull(tmp_path, *args, env=None):
    return run([str(BIN / "medsec"), "data", "pull", *args], tmp_path, env or _env(),
               timeout=300)


def _manifest(folder):
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _no_canary_anywhere(folder, *texts):
    for path in folder.rglob("*"):
        rel = str(path.relative_to(folder)).lower()
        assert not any(c.lower() in rel for c in CANARIES), rel
        if path.is_file():
            data = path.read_bytes()
            assert not any(c.encode() in data for c in CANARIES), path.name
    for text in texts:
        assert not any(c in text for c in CANARIES)


def test_dicomweb_pull_deidentifies_labels_and_quarantines(pacs, tmp_path):
    server, _ = pacs
    out = tmp_path / "data" / "pacs"
    proc = _pull(tmp_path, "--url", server.dicomweb, "--out", str(out),
                 "--label-tag", "StudyDescription")
    assert proc.returncode == 0, proc.stderr
    assert "pulled 4 study(ies): 6 image(s)" in proc.stdout and "1 quarantined" in proc.stdout
    rows = _manifest(out)
    assert len(rows) == 6
    for i, ident in enumerate(PATIENTS):
        digest = hmac.new(KEY.encode(), f"patient:id:{ident.patient_id}".encode(),
                          hashlib.sha256).hexdigest()
        mine = [r for r in rows if r["patient_id"] == "P" + digest[:16]]
        assert len(mine) == 2 and {r["label"] for r in mine} == {"LESION" if i % 2 else
                                                                 "NORMAL"}
        assert len({r["study_id"] for r in mine}) == 1
    assert json.loads((out / "pacs_pull.json").read_text())["n_studies"] == 4
    for row in rows:
        image = read_dicom(out / row["path"], 10**6)
        assert image.shape == (1, 24, 24) and 0 <= image.min() and image.max() <= 1
    _no_canary_anywhere(out, proc.stdout, proc.stderr)


def test_dimse_c_get_gives_the_same_pseudonymous_dataset(pacs, tmp_path):
    server, _ = pacs
    web, dimse = tmp_path / "web", tmp_path / "dimse"
    assert _pull(tmp_path, "--url", server.dicomweb, "--out", str(web),
                 "--label-tag", "StudyDescription").returncode == 0
    proc = _pull(tmp_path, "--dimse", f"127.0.0.1:{server.dicom_port}", "--aet", SCU_AET,
                 "--out", str(dimse), "--label-tag", "StudyDescription")
    assert proc.returncode == 0, proc.stderr
    assert _manifest(web) == _manifest(dimse)  # keyed pseudonyms: same names both ways
    for row in _manifest(web):
        np.testing.assert_array_equal(read_dicom(web / row["path"], 10**6),
                                      read_dicom(dimse / row["path"], 10**6))
    _no_canary_anywhere(dimse, proc.stdout, proc.stderr)
    refused = _pull(tmp_path, "--dimse", f"127.0.0.1:{server.dicom_port}", "--aet",
                    "STRANGER", "--out", str(tmp_path / "x"), "--label-tag", "StudyDescription")
    assert refused.returncode == 2 and "refused C-FIND" in refused.stderr


def test_label_csv_keyed_by_accession_outside_the_repo(pacs, tmp_path):
    server, _ = pacs
    labels = tmp_path / "labels.csv"
    labels.write_text("accession_number,label\n"
                      + "".join(f"{p.accession},class{i}\n" for i, p in enumerate(PATIENTS[:2])))
    out = tmp_path / "out"
    proc = _pull(tmp_path, "--url", server.dicomweb, "--out", str(out), "--labels", str(labels),
                 "--filter", "ModalitiesInStudy=CT")
    assert proc.returncode == 0, proc.stderr
    rows = _manifest(out)
    assert sorted(r["label"] for r in rows) == ["class0", "class0", "class1", "class1"]
    assert "2 skipped" in proc.stdout  # the third patient's study has no label


@pytest.mark.parametrize("case", ["bad-password", "unreachable", "no-key"])
def test_errors_are_one_line_and_exit_2(pacs, tmp_path, case):
    server, _ = pacs
    url = server.dicomweb
    env = _env()
    if case == "bad-password":
        env["MEDSEC_PACS_PASSWORD"] = "wrong"
    elif case == "unreachable":
        url = f"http://127.0.0.1:{free_port()}/dicom-web"
    else:
        env.pop("MEDSEC_DEID_KEY")
    proc = _pull(tmp_path, "--url", url, "--out", str(tmp_path / "o"), "--label-tag",
                 "StudyDescription", env=env)
    expected = {"bad-password": "refused the credentials (HTTP 401)",
                "unreachable": "unreachable", "no-key": "no de-identification key"}[case]
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "wrong" not in proc.stderr
    assert not (tmp_path / "o").exists()
