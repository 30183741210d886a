"""Pull studies from a PACS (DICOMweb QIDO-RS/WADO-RS, or DIMSE C-FIND/C-GET) and
de-identify them on the way in (:mod:`medsec.data.deid`), so only pseudonymous files reach
the raw data folder.

Credentials never come from the config in git: ``$MEDSEC_PACS_USER`` and
``$MEDSEC_PACS_PASSWORD``, or ``$MEDSEC_PACS_CREDENTIALS_FILE`` (one line ``user:password``,
outside any git working tree). An unreachable PACS or refused credentials is one
:class:`~medsec.errors.DataError` line (the CLI exits 2).
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsec.data.deid import DeidSettings, LabelFn, deidentify_datasets, secret_file
from medsec.errors import ConfigError, DataError

USER_ENV, PASSWORD_ENV = "MEDSEC_PACS_USER", "MEDSEC_PACS_PASSWORD"
CREDENTIALS_FILE_ENV = "MEDSEC_PACS_CREDENTIALS_FILE"
DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
STUDY_UID_TAG, SERIES_UID_TAG, SOP_UID_TAG = "0020000D", "0020000E", "00080018"
PULL_MARKER = "pacs_pull.json"
"""Written into the pulled folder; the data stage then tags the source ``pacs``."""


def load_credentials(environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(user, password) from the environment or the credentials file; None when neither is
    set (a PACS without authentication)."""
    env = os.environ if environ is None else environ
    if env.get(USER_ENV):
        if PASSWORD_ENV not in env:
            raise ConfigError(f"${USER_ENV} is set but ${PASSWORD_ENV} is not")
        return env[USER_ENV], env[PASSWORD_ENV]
    if env.get(CREDENTIALS_FILE_ENV):
        path = secret_file(CREDENTIALS_FILE_ENV, "PACS credentials", env)
        user, sep, password = path.read_text().strip().partition(":")
        if not sep or not user:
            raise ConfigError(f"${CREDENTIALS_FILE_ENV}: {path} must hold one line "
                              "'user:password'")
        return user, password
    return None


def _redact(url: str) -> str:
    """``url`` without any ``user:password@`` part."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class DicomWebClient:
    """QIDO-RS and WADO-RS against ``url`` (the DICOMweb root, e.g.
    ``http://127.0.0.1:8042/dicom-web``)."""

    url: str
    auth: tuple[str, str] | None = None
    timeout_s: float = 60.0

    def _get(self, path: str, accept: str, params: dict[str, str] | None = None) -> Any:
        import requests

        where = _redact(self.url)
        try:
            response = requests.get(f"{self.url.rstrip('/')}/{path}", params=params,
                                    headers={"Accept": accept}, auth=self.auth,
                                    timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise DataError(f"PACS {where} unreachable: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise DataError(f"PACS {where} refused the credentials (HTTP "
                            f"{response.status_code}); set ${USER_ENV}/${PASSWORD_ENV} or "
                            f"${CREDENTIALS_FILE_ENV}")
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise DataError(f"PACS {where}: GET {path.split('?')[0]} answered HTTP "
                            f"{response.status_code}")
        return response

    def studies(self, filters: dict[str, str] | None = None) -> list[str]:
        """StudyInstanceUIDs matching the QIDO-RS ``filters`` (e.g. ``{"ModalitiesInStudy":
        "CT"}``), sorted."""
        response = self._get("studies", DICOM_JSON, dict(filters or {}))
        if response is None:
            return []
        try:
            found = response.json()
            return sorted(item[STUDY_UID_TAG]["Value"][0] for item in found)
        except (ValueError, KeyError, IndexError, TypeError):
            raise DataError(f"PACS {_redact(self.url)}: QIDO-RS answer is not a DICOM JSON "
                            "list of studies") from None

    def study(self, study_uid: str) -> Iterator[Any]:
        """Every instance of the study as a pydicom Dataset: QIDO-RS lists the instances,
        WADO-RS retrieves them one at a time (memory bounded by one instance, not a study)."""
        import pydicom

        listing = self._get(f"studies/{study_uid}/instances", DICOM_JSON)
        try:
            instances = sorted((item[SERIES_UID_TAG]["Value"][0], item[SOP_UID_TAG]["Value"][0])
                               for item in (listing.json() if listing is not None else []))
        except (ValueError, KeyError, IndexError, TypeError):
            raise DataError(f"PACS {_redact(self.url)}: QIDO-RS answer is not a DICOM JSON "
                            "list of instances") from None
        for number, (series, sop) in enumerate(instances, 1):
            response = self._get(f"studies/{study_uid}/series/{series}/instances/{sop}",
                                 MULTIPART_DICOM)
            if response is None:
                continue
            for part in split_multipart(response.headers.get("Content-Type", ""),
                                        response.content):
                try:
                    yield pydicom.dcmread(io.BytesIO(part))
                except Exception as exc:  # pydicom raises many types for a corrupt file
                    raise DataError(f"PACS {_redact(self.url)}: WADO-RS instance {number} of a "
                                    f"study is not a readable DICOM file "
                                    f"({type(exc).__name__})") from None


def split_multipart(content_type: str, body: bytes) -> list[bytes]:
    """The payloads of a ``multipart/related`` HTTP body (RFC 2046), in order."""
    if "multipart/" not in content_type:
        raise DataError(f"WADO-RS answer is {content_type or 'untyped'}, not multipart/related")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    return [part.get_payload(decode=True) for part in message.iter_parts()]


# --- DIMSE (pynetdicom) ----------------------------------------------------------------------

@dataclass
class DimseClient:
    """C-FIND and C-GET with pynetdicom: ``host:port`` called ``called_aet``, calling as
    ``calling_aet`` (which the PACS must list, e.g. Orthanc's DicomModalities)."""

    host: str
    port: int
    called_aet: str
    calling_aet: str = "MEDSEC"
    timeout_s: float = 60.0

    def _associate(self, ae: Any, **kwargs: Any) -> Any:
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, **kwargs)
        if not assoc.is_established:
            raise DataError(f"PACS {self.host}:{self.port} ({self.called_aet}) unreachable or "
                            f"refused the association from {self.calling_aet}")
        return assoc

    def studies(self, filters: dict[str, str] | None = None) -> list[str]:
        from pydicom.dataset import Dataset
        from pynetdicom import AE
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        ae = AE(ae_title=self.calling_aet)
        ae.add_requested_context(FIND)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        for keyword, value in (filters or {}).items():
            setattr(query, keyword, value)
        assoc = self._associate(ae)
        found, refused = [], False
        try:
            for status, ident in assoc.send_c_find(query, FIND):
                if status is None or "Status" not in status:
                    refused = True
                elif status.Status in (0xFF00, 0xFF01) and ident is not None:
                    found.append(str(ident.StudyInstanceUID))
        finally:
            assoc.release()
        if refused and not found:
            raise DataError(f"PACS {self.host}:{self.port} refused C-FIND from AE "
                            f"{self.calling_aet} (is it a registered modality?)")
        return sorted(found)

    def study(self, study_uid: str) -> Iterator[Any]:
        from pydicom.dataset import Dataset
        from pynetdicom import AE, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        received: list[Any] = []

        def on_store(event: Any) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            received.append(ds)
            return 0x0000

        ae = AE(ae_title=self.calling_aet)
        ae.add_requested_context(GET)
        roles = []
        for sop_class in _storage_classes():
            ae.add_requested_context(sop_class)
            roles.append(build_role(sop_class, scp_role=True))
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        assoc = self._associate(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        final = None
        try:
            for status, _ in assoc.send_c_get(query, GET):
                if status is not None and "Status" in status:
                    final = status.Status
        finally:
            assoc.release()
        if final not in (0x0000, 0xB000):
            raise DataError(f"PACS {self.host}:{self.port}: C-GET of a study ended with status "
                            f"{final if final is None else hex(final)}")
        yield from received


def _storage_classes() -> list[str]:
    """The image storage SOP classes C-GET accepts (a presentation context each; at most
    128 may be proposed, so not every storage class)."""
    from pynetdicom import sop_class as sc

    names = ["CTImageStorage", "MRImageStorage", "ComputedRadiographyImageStorage",
             "DigitalXRayImageStorageForPresentation", "DigitalXRayImageStorageForProcessing",
             "DigitalMammographyXRayImageStorageForPresentation", "UltrasoundImageStorage",
             "UltrasoundMultiFrameImageStorage", "SecondaryCaptureImageStorage",
             "EnhancedCTImageStorage", "EnhancedMRImageStorage",
             "XRayAngiographicImageStorage", "NuclearMedicineImageStorage",
             "PositronEmissionTomographyImageStorage", "VLPhotographicImageStorage",
             "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
             "MultiFrameGrayscaleWordSecondaryCaptureImageStorage"]
    return [getattr(sc, name) for name in names]


# --- pull --------------------------------------------------------------------------------------

def pull(client: DicomWebClient | DimseClient, out_dir: str | Path, settings: DeidSettings,
         key: bytes, labels: LabelFn, filters: dict[str, str] | None = None,
         limit: int | None = None, quarantine_dir: str | Path | None = None
         ) -> dict[str, Any]:
    """List the studies matching ``filters``, retrieve each (at most ``limit``), de-identify
    every instance and write ``out_dir`` (a snapshot: replaced atomically) with pseudonymous
    ``<patient>/<study>/<instance>.dcm`` files, ``manifest.csv``, ``deid_report.json`` and
    ``pacs_pull.json`` (protocol and study count: marks the folder as pulled).
    Returns the report plus ``n_studies``."""
    studies = client.studies(filters)
    if limit is not None:
        studies = studies[:limit]
    if not studies:
        raise DataError(f"PACS: no study matches {filters or 'the (empty) query'}")

    def datasets() -> Iterator[Any]:
        for study_uid in studies:
            yield from client.study(study_uid)

    protocol = "dicomweb" if isinstance(client, DicomWebClient) else "dimse"
    marker = {"pulled_by": "medsec data pull", "protocol": protocol, "n_studies": len(studies)}
    report = deidentify_datasets(datasets(), out_dir, settings, key, labels, quarantine_dir,
                                 extra_json={PULL_MARKER: marker})
    return {**report, "n_studies": len(studies)}
