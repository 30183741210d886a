"""medsec.data.deid: PS3.15 Basic Profile + keyed pseudonyms, dates, burned-in quarantine."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from medsec.data.deid import (
    REPORT_FILE,
    DeidSettings,
    Pseudonymizer,
    deidentify_dataset,
    deidentify_tree,
    load_key,
)
from medsec.data.dicom import read_dicom
from medsec.errors import ConfigError
from tests.dicom_factory import (
    Identity,
    SecondaryCaptureImageStorage,
    make_dataset,
    phantom_pixels,
    write,
    write_study_tree,
)

KEY = b"unit-test-key-0123456789abcdef"
CANARY = Identity(patient_name="Zyxwvut^Quintessa", patient_id="CANPID-99731",
                  birth_date="19580217", accession="CANACC-55123",
                  institution="Canary Memorial Hospital", study_date="20230405")
CANARIES = ["Zyxwvut", "Quintessa", "CANPID-99731", "19580217", "CANACC-55123",
            "Canary Memorial", "20230405"]


def _hmac(kind: str, value: str) -> str:
    return hmac.new(KEY, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def test_planted_phi_is_absent_from_the_written_bytes(tmp_path):
    paths = write_study_tree(tmp_path / "in", [CANARY], per_study=2)
    raw = paths[0].read_bytes()
    assert all(c.encode() in raw for c in CANARIES)  # planted
    report = deidentify_tree(tmp_path / "in", tmp_path / "out", DeidSettings(), KEY)
    outputs = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(outputs) == 2 and report["n_written"] == 2
    for path in [*outputs, tmp_path / "out" / REPORT_FILE]:
        data = path.read_bytes()
        for canary in CANARIES:
            assert canary.encode() not in data, (canary, path.name)
        assert not any(c.lower() in str(path.relative_to(tmp_path)).lower() for c in CANARIES)
    ds = pydicom.dcmread(outputs[0])
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert not any(elem.tag.is_private for elem in ds)
    assert ds.StudyDate == "" and ds.PatientBirthDate == ""
    assert ds.PatientID == "P" + _hmac("patient", f"id:{CANARY.patient_id}")[:16]
    # the image itself is untouched
    before = sorted(float(read_dicom(p, 10**6).sum()) for p in paths)
    np.testing.assert_allclose(sorted(float(read_dicom(p, 10**6).sum()) for p in outputs), before)


def test_pseudonyms_are_keyed_stable_and_valid_uids():
    ident = Identity()
    a = make_dataset(phantom_pixels(0, 1), ident)
    b = make_dataset(phantom_pixels(1, 2), ident, instance_number=2)
    one = deidentify_dataset(a, Pseudonymizer(KEY), DeidSettings()).dataset
    again = deidentify_dataset(a, Pseudonymizer(KEY), DeidSettings()).dataset
    sibling = deidentify_dataset(b, Pseudonymizer(KEY), DeidSettings()).dataset
    other_key = deidentify_dataset(a, Pseudonymizer(b"another-key-0123456789"),
                                   DeidSettings()).dataset
    assert one.StudyInstanceUID == again.StudyInstanceUID == sibling.StudyInstanceUID
    assert one.SOPInstanceUID == again.SOPInstanceUID != sibling.SOPInstanceUID
    assert one.StudyInstanceUID != other_key.StudyInstanceUID
    assert one.PatientID != other_key.PatientID
    expected = "2.25." + str(int(_hmac("uid", ident.study_uid)[:32], 16))
    assert one.StudyInstanceUID == expected
    assert one.file_meta.MediaStorageSOPInstanceUID == one.SOPInstanceUID
    for uid in (one.StudyInstanceUID, one.SeriesInstanceUID, one.SOPInstanceUID,
                one.FrameOfReferenceUID):
        assert UID(uid).is_valid and uid != str(a.StudyInstanceUID)
    assert one.SOPClassUID == a.SOPClassUID  # standard UIDs are kept
    assert a.PatientName == ident.patient_name  # the input is not modified


def test_longitudinal_dates_shift_per_patient_and_keep_intervals():
    pseudo = Pseudonymizer(KEY)
    settings = DeidSettings(retain_longitudinal=True)
    first = make_dataset(phantom_pixels(0, 1), Identity(study_date="20240315"))
    later = make_dataset(phantom_pixels(0, 2), Identity(study_date="20240401"))
    out1 = deidentify_dataset(first, pseudo, settings).dataset
    out2 = deidentify_dataset(later, pseudo, settings).dataset
    days = int(_hmac("dateshift", "id:PID-42")[:8], 16) % 3650 + 1
    expected = dt.date(2024, 3, 15) - dt.timedelta(days=days)
    assert out1.StudyDate == expected.strftime("%Y%m%d")
    assert out1.PatientBirthDate == (dt.date(1970, 1, 1) - dt.timedelta(days=days)
                                     ).strftime("%Y%m%d")
    d1, d2 = (dt.datetime.strptime(o.StudyDate, "%Y%m%d") for o in (out1, out2))
    assert (d2 - d1).days == 17
    assert out1.StudyTime == "101500"  # times kept with the option
    assert out1.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [c.CodeValue for c in out1.DeidentificationMethodCodeSequence] == ["113100",
                                                                              "113107"]
    other = deidentify_dataset(make_dataset(phantom_pixels(0, 3), Identity(patient_id="X9")),
                               pseudo, settings).dataset
    assert other.StudyDate != out1.StudyDate  # another patient, another offset


@pytest.mark.parametrize("kwargs, reason", [
    ({"modality": "US", "burned_in": None}, "modality US"),
    ({"burned_in": "YES"}, "BurnedInAnnotation=YES"),
    ({"sop_class": SecondaryCaptureImageStorage, "modality": "CT"}, "secondary capture"),
])
def test_burned_in_is_flagged_and_quarantined_unless_allowed(tmp_path, kwargs, reason):
    write(make_dataset(phantom_pixels(0, 1), **kwargs), tmp_path / "in" / "a.dcm")
    write(make_dataset(phantom_pixels(0, 2), Identity(patient_id="OK1"), burned_in="NO"),
          tmp_path / "in" / "b.dcm")
    report = deidentify_tree(tmp_path / "in", tmp_path / "out", DeidSettings(), KEY,
                             quarantine_dir=tmp_path / "q")
    assert report["n_written"] == 1 and report["n_quarantined"] == 1
    assert list(report["quarantined"].values()) == [reason]
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1
    held = list((tmp_path / "q").rglob("*.dcm"))
    assert len(held) == 1 and pydicom.dcmread(held[0]).BurnedInAnnotation == "YES"
    allowed = deidentify_tree(tmp_path / "in", tmp_path / "out2",
                              DeidSettings(allow_burned_in=True), KEY)
    assert allowed["n_written"] == 2 and allowed["n_quarantined"] == 0
    assert len(list((tmp_path / "out2").rglob("*.dcm"))) == 2


def test_report_lists_changes_by_name_and_skips_non_dicom(tmp_path):
    write_study_tree(tmp_path / "in", [CANARY], per_study=1)
    (tmp_path / "in" / "Zyxwvut notes.txt").write_text("not dicom")
    ds = make_dataset(phantom_pixels(0, 1))
    del ds.PixelData
    write(ds, tmp_path / "in" / "nopix.dcm")
    deidentify_tree(tmp_path / "in", tmp_path / "out", DeidSettings(), KEY)
    text = (tmp_path / "out" / REPORT_FILE).read_text()
    report = json.loads(text)
    assert report["skipped"] == {"not_dicom": 1, "no_pixel_data": 1}
    (entry,) = report["files"].values()
    assert {"PatientName", "PatientID", "StudyInstanceUID"} <= set(entry["changes"]["replaced"])
    assert "AccessionNumber" in entry["changes"]["emptied"]
    assert "(0009,1010) private" in entry["changes"]["removed"]
    assert "PatientIdentityRemoved" in entry["changes"]["added"]
    assert report["attribute_counts"]["private_removed"] == 2
    assert not any(c in text for c in CANARIES)


def test_key_comes_from_env_or_a_file_outside_git(tmp_path):
    with pytest.raises(ConfigError, match="no de-identification key: set \\$MEDSEC_DEID_KEY"):
        load_key({})
    with pytest.raises(ConfigError, match="at least 16"):
        load_key({"MEDSEC_DEID_KEY": "short"})
    assert load_key({"MEDSEC_DEID_KEY": "x" * 20}) == b"x" * 20
    outside = tmp_path / "deid.key"
    outside.write_text("k" * 32 + "\n")
    assert load_key({"MEDSEC_DEID_KEY_FILE": str(outside)}) == b"k" * 32
    repo = Path(__file__).resolve().parents[2]
    inside = repo / "tests" / "unit" / "test_deid.py"  # any file in the working tree
    with pytest.raises(ConfigError, match="git working tree"):
        load_key({"MEDSEC_DEID_KEY_FILE": str(inside)})


def test_multipart_split_matches_what_a_mime_writer_built():
    from email.mime.application import MIMEApplication
    from email.mime.multipart import MIMEMultipart

    from medsec.data.pacs import split_multipart

    payloads = [b"\x00DICM\r\n--not-a-boundary\r\n" + bytes(range(256)), b"second\r\n\r\n"]
    message = MIMEMultipart("related", type="application/dicom")
    for payload in payloads:
        message.attach(MIMEApplication(payload, "dicom"))
    body = message.as_bytes().split(b"\n\n", 1)[1]
    assert split_multipart(str(message["Content-Type"]), body) == payloads  # base64 parts
    # binary parts with CRLF, as a DICOMweb server sends them
    raw = b"".join(b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                   for p in payloads) + b"--XyZ--\r\n"
    assert split_multipart('multipart/related; type="application/dicom"; boundary=XyZ',
                           raw) == payloads


def test_pacs_credentials_from_env_or_a_file_outside_git(tmp_path):
    from medsec.data.pacs import load_credentials

    assert load_credentials({}) is None
    assert load_credentials({"MEDSEC_PACS_USER": "u", "MEDSEC_PACS_PASSWORD": "p"}) == ("u", "p")
    with pytest.raises(ConfigError, match="MEDSEC_PACS_PASSWORD is not"):
        load_credentials({"MEDSEC_PACS_USER": "u"})
    creds = tmp_path / "pacs.cred"
    creds.write_text("reader:s3cret:with-colon\n")
    assert load_credentials({"MEDSEC_PACS_CREDENTIALS_FILE": str(creds)}) == (
        "reader", "s3cret:with-colon")
    inside = Path(__file__).resolve()
    with pytest.raises(ConfigError, match="git working tree"):
        load_credentials({"MEDSEC_PACS_CREDENTIALS_FILE": str(inside)})
