"""De-identification of DICOM files before anything enters the raw data folder (and DVC).

The basis is the PS3.15 Annex E **Basic Application Level Confidentiality Profile** as
encoded by ``dicom-anonymizer`` (KitwareMedical, 2.1.0, table ``dicomfields_2026c``): one
action (remove, empty, dummy, new UID, keep) per attribute of the standard's table E.1-1.
It was chosen over ``deid`` (pydicom/deid) because it ships the standard's own table, versioned
by DICOM edition, as data, so "what is removed" is the standard's answer and can be audited
against it; ``deid``'s default recipe is a generic header filter whose coverage has to be
written and maintained by hand. Neither sets PatientIdentityRemoved, keeps UIDs stable across
runs or shifts dates per patient, so this module adds, on top of the table:

* private tags removed (all odd groups);
* UIDs (every non-standard UID anywhere, including nested sequences and the file meta) and
  PatientID replaced by **keyed pseudonyms**: HMAC-SHA256 with a secret key read from
  ``$MEDSEC_DEID_KEY`` or the file ``$MEDSEC_DEID_KEY_FILE`` (which must not lie in a git
  working tree); never from the config. Same key + same input -> same pseudonym, so repeated
  pulls and several series of one study line up, while nobody without the key can link a
  pseudonym back (or test a guessed ID against it);
* dates: with ``retain_longitudinal`` every DA/DT value is shifted back by a per-patient
  number of days (1..3650, derived from the HMAC of the patient ID, so intervals within a
  patient are kept), times are kept; otherwise every DA/DT/TM value is emptied;
* every remaining person name (VR PN) anywhere is emptied; PatientName becomes the
  pseudonymous patient ID;
* ``PatientIdentityRemoved = YES``, ``DeidentificationMethod`` and its code sequence
  (DCM 113100, plus 113107 with retained longitudinal dates), and
  ``LongitudinalTemporalInformationModified``;
* burned-in text: an image with ``BurnedInAnnotation = YES``, a Secondary Capture SOP class or
  a modality that usually carries text in the pixels (US, OT, SC, XC, ES, DOC) is flagged and
  quarantined (not written to the output) unless ``allow_burned_in`` is set: header rules
  cannot clean pixels;
* output names are pseudonyms only: ``<patient>/<study>/<instance>.dcm``; the input file and
  folder names (which often carry a patient name) are never copied;
* a JSON report: per output file, which attributes were removed, emptied, replaced or added
  (keywords or tag numbers only, never values), and totals.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import hmac
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsec.config_base import StrictModel
from medsec.errors import ConfigError, DataError

KEY_ENV = "MEDSEC_DEID_KEY"
KEY_FILE_ENV = "MEDSEC_DEID_KEY_FILE"
MIN_KEY_BYTES = 16
PROFILE_TABLE = "dicomfields_2026c"
MAX_SHIFT_DAYS = 3650
RISKY_MODALITIES = frozenset({"US", "OT", "SC", "XC", "ES", "DOC"})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
REPORT_FILE = "deid_report.json"
MANIFEST_FILE = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "patient_id", "study_id")
_TABLE_LOCK = threading.Lock()


class DeidSettings(StrictModel):
    """How to de-identify. ``retain_longitudinal``: shift dates per patient instead of
    removing them; ``allow_burned_in``: write images flagged for burned-in text instead of
    quarantining them."""

    retain_longitudinal: bool = False
    allow_burned_in: bool = False


# --- the key ---------------------------------------------------------------------------------

def in_git_worktree(path: Path) -> bool:
    return any((parent / ".git").exists() for parent in path.resolve().parents)
def secret_file(variable: str, what: str, environ: dict[str, str] | None = None) -> Path:
    """The file named by environment ``variable`` holding a secret (``what``, e.g. "the
    de-identification key"): it must exist and lie outside any git working tree, so the secret
    never ends up in a repository. ConfigError (one line) otherwise."""
    env = os.environ if environ is None else environ
    path = Path(env[variable]).expanduser()
    if not path.is_file():
        raise ConfigError(f"${variable}: {path} does not exist")
    if in_git_worktree(path):
        raise ConfigError(f"${variable}: {path} lies in a git working tree; "
                          f"keep {what} outside any repository")
    return path




def load_key(environ: dict[str, str] | None = None) -> bytes:
    """The HMAC key from ``$MEDSEC_DEID_KEY`` (text) or ``$MEDSEC_DEID_KEY_FILE`` (a file
    outside any git working tree); at least 16 bytes. ConfigError (one line) otherwise."""
    env = os.environ if environ is None else environ
    if env.get(KEY_ENV):
        key = env[KEY_ENV].encode()
        where = f"${KEY_ENV}"
    elif env.get(KEY_FILE_ENV):
        path = secret_file(KEY_FILE_ENV, "the de-identification key", env)
        key = path.read_bytes().strip()
        where = str(path)
    else:
        raise ConfigError(f"no de-identification key: set ${KEY_ENV} or ${KEY_FILE_ENV} (a file "
                          "outside the repository, e.g. made with `openssl rand -hex 32`)")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where}: the de-identification key has {len(key)} bytes; "
                          f"use at least {MIN_KEY_BYTES}")
    return key


# --- keyed pseudonyms ----------------------------------------------------------------------

@dataclass
class Pseudonymizer:
    """Stable keyed pseudonyms: HMAC-SHA256(key, ``kind:value``), domain-separated by kind."""

    key: bytes
    produced_uids: set[str] = field(default_factory=set)

    def digest(self, kind: str, value: str) -> str:
        return hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def patient(self, patient_key: str) -> str:
        """``P`` + 16 hex digits."""
        return "P" + self.digest("patient", patient_key)[:16]

    def short(self, kind: str, value: str) -> str:
        """A pseudonymous file/folder name: first letter of ``kind`` + 16 hex digits."""
        return kind[0].upper() + self.digest(kind, value)[:16]

    def uid(self, old: str) -> str:
        """``2.25.<128-bit integer>`` (PS3.5 B.2 UUID-derived form, at most 44 characters)."""
        if old in self.produced_uids:
            return old
        new = "2.25." + str(int(self.digest("uid", str(old))[:32], 16))
        self.produced_uids.add(new)
        return new

    def shift_days(self, patient_key: str) -> int:
        """Days (1..3650) every date of this patient moves back."""
        return int(self.digest("dateshift", patient_key)[:8], 16) % MAX_SHIFT_DAYS + 1


class _KeyedUIDTable(dict):
    """Stands in for dicom-anonymizer's module-level ``dictionary`` (old UID -> random new
    UID) so that every UID the profile replaces gets the keyed pseudonym instead."""

    def __init__(self, pseudo: Pseudonymizer) -> None:
        super().__init__()
        self._pseudo = pseudo

    def __contains__(self, old: object) -> bool:
        return True

    def get(self, old: Any, default: Any = None) -> str:
        return self._pseudo.uid(str(old))


# --- dataset walking -----------------------------------------------------------------------

def _walk(ds: Any) -> Iterator[tuple[Any, Any]]:
    """(dataset, element) for every element, nested sequences included."""
    for elem in list(ds):
        yield ds, elem
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                yield from _walk(item)


def _is_standard_uid(value: str) -> bool:
    from pydicom.uid import UID_dictionary

    return value in UID_dictionary


def _shift_date(value: str, days: int) -> str:
    """``YYYYMMDD`` (or the date part of a DT) moved back ``days``; '' if not a date."""
    text = str(value).strip()
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (day - dt.timedelta(days=days)).strftime("%Y%m%d") + text[8:]


def _date_pass(ds: Any, retain: bool, days: int) -> None:
    for _, elem in _walk(ds):
        if elem.VR not in ("DA", "DT", "TM") or elem.value in (None, ""):
            continue
        if not retain:
            elem.value = ""
        elif elem.VR in ("DA", "DT"):
            values = elem.value if elem.VM > 1 else [elem.value]
            shifted = [_shift_date(v, days) for v in values]
            elem.value = shifted if elem.VM > 1 else shifted[0]


def _uid_pass(ds: Any, pseudo: Pseudonymizer) -> None:
    """Every non-standard UID value anywhere -> its keyed pseudonym (once)."""
    for _, elem in _walk(ds):
        if elem.VR != "UI" or elem.value in (None, ""):
            continue
        if elem.VM > 1:
            elem.value = [v if _is_standard_uid(v) else pseudo.uid(v) for v in elem.value]
        elif not _is_standard_uid(elem.value):
            elem.value = pseudo.uid(elem.value)


def _name_pass(ds: Any) -> None:
    for _, elem in _walk(ds):
        if elem.VR == "PN" and elem.value not in (None, ""):
            elem.value = ""


# --- one dataset ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DeidResult:
    """One de-identified dataset: pseudonyms, burned-in flag and reason, tag changes."""

    dataset: Any
    patient: str
    study: str
    instance: str
    burned_in: str | None
    changes: dict[str, list[str]]


def patient_key_of(ds: Any) -> str:
    """What identifies the patient: PatientID, else the StudyInstanceUID (one study = one
    pseudonymous patient)."""
    pid = str(getattr(ds, "PatientID", "") or "").strip()
    return f"id:{pid}" if pid else f"study:{getattr(ds, 'StudyInstanceUID', '')}"


def burned_in_reason(ds: Any) -> str | None:
    """Why the pixels may hold text (None when nothing suggests it)."""
    if str(getattr(ds, "BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation=YES"
    if str(getattr(ds, "SOPClassUID", "")).startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture"
    modality = str(getattr(ds, "Modality", "")).upper()
    if modality in RISKY_MODALITIES:
        return f"modality {modality}"
    return None


def _tag_name(elem: Any) -> str:
    if elem.tag.is_private:
        return f"({elem.tag.group:04X},{elem.tag.element:04X}) private"
    return elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"


def _changes(before: Any, after: Any) -> dict[str, list[str]]:
    """Top-level (and file meta) attributes removed / emptied / replaced / added: names only."""
    out: dict[str, list[str]] = {"removed": [], "emptied": [], "replaced": [], "added": []}
    pairs = [(before, after)]
    if hasattr(before, "file_meta") and hasattr(after, "file_meta"):
        pairs.append((before.file_meta, after.file_meta))
    for old_ds, new_ds in pairs:
        for elem in old_ds:
            if elem.tag not in new_ds:
                out["removed"].append(_tag_name(elem))
                continue
            new = new_ds[elem.tag]
            if new.value == elem.value:
                continue
            empty = new.value in (None, "", b"") or (new.VR == "SQ" and not len(new.value))
            out["emptied" if empty else "replaced"].append(_tag_name(elem))
        out["added"] += [_tag_name(e) for e in new_ds if e.tag not in old_ds]
    return {k: sorted(v) for k, v in out.items()}


@functools.cache
def _profile_rules() -> tuple[dict[tuple[int, ...], Callable], dict[tuple[int, ...], Callable]]:
    """dicom-anonymizer's action per tag of the profile table, and our overrides: every
    date/time attribute is kept by the table step (the date pass has shifted or emptied it)."""
    import dicomanonymizer.simpledicomanonymizer as sda
    from pydicom.datadict import dictionary_VR

    rules = sda.initialize_actions(PROFILE_TABLE)
    overrides: dict[tuple[int, ...], Callable] = {}
    for tag in rules:
        if len(tag) != 2:
            continue
        try:
            vr = dictionary_VR((tag[0] << 16) | tag[1])
        except KeyError:
            continue
        if vr in ("DA", "DT", "TM"):
            overrides[tag] = sda.keep
    return rules, overrides


def deidentify_dataset(ds: Any, pseudo: Pseudonymizer, settings: DeidSettings) -> DeidResult:
    """De-identify a copy of ``ds`` (a pydicom Dataset; the argument is not changed)."""
    import dicomanonymizer.simpledicomanonymizer as sda
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    original = ds
    ds = copy.deepcopy(ds)
    patient_key = patient_key_of(ds)
    reason = burned_in_reason(ds)
    days = pseudo.shift_days(patient_key)
    study_uid = str(getattr(ds, "StudyInstanceUID", ""))
    sop_uid = str(getattr(ds, "SOPInstanceUID", "")) or pseudo.digest("nosop", repr(ds)[:4096])

    # 1. dates first (the profile would overwrite them with dummies)
    _date_pass(ds, settings.retain_longitudinal, days)
    # 2. PS3.15 E.1-1 through dicom-anonymizer: UIDs via the keyed table, dates left as step 1
    #    made them, private tags removed
    rules, overrides = _profile_rules()
    with _TABLE_LOCK:
        saved = sda.dictionary
        sda.dictionary = _KeyedUIDTable(pseudo)
        try:
            sda.anonymize_dataset(ds, dict(overrides), delete_private_tags=True,
                                  base_rules_gen=lambda: dict(rules))
        except (NotImplementedError, ValueError, KeyError, TypeError) as exc:
            name = pseudo.short("instance", sop_uid)
            raise DataError(f"de-identification failed on instance {name}: "
                            f"{type(exc).__name__}") from None
        finally:
            sda.dictionary = saved
    # 3. safety nets over everything, nested sequences included
    _uid_pass(ds, pseudo)
    if hasattr(ds, "file_meta"):
        implementation = ds.file_meta.get("ImplementationClassUID")
        _uid_pass(ds.file_meta, pseudo)
        if implementation is not None:  # identifies the writing software, not the patient
            ds.file_meta.ImplementationClassUID = implementation
    _name_pass(ds)
    ds.remove_private_tags()
    # 4. identity: pseudonyms and the de-identification record
    patient = pseudo.patient(patient_key)
    ds.PatientID = patient
    ds.PatientName = patient
    ds.PatientIdentityRemoved = "YES"
    longitudinal = "MODIFIED" if settings.retain_longitudinal else "REMOVED"
    ds.LongitudinalTemporalInformationModified = longitudinal
    ds.DeidentificationMethod = [  # LO: at most 64 characters per value
        f"PS3.15 E.1 Basic Profile (dicom-anonymizer {PROFILE_TABLE})",
        "private tags removed", "keyed HMAC-SHA256 UIDs and PatientID",
        f"dates {'shifted per patient' if settings.retain_longitudinal else 'removed'}"]
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if settings.retain_longitudinal:
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates "
                                "Option"))
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if reason is not None and "BurnedInAnnotation" not in ds:
        ds.BurnedInAnnotation = "YES"
    return DeidResult(
        dataset=ds, patient=patient, study=pseudo.short("study", study_uid),
        instance=pseudo.short("instance", sop_uid), burned_in=reason,
        changes=_changes(original, ds))


# --- a folder of files ---------------------------------------------------------------------

@dataclass
class DeidReport:
    """Counts and per-file changes; holds no identifying value (only pseudonyms, tag names)."""

    settings: DeidSettings
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantined: dict[str, str] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)

    def add(self, result: DeidResult, rel_path: str, quarantined: bool) -> None:
        entry = {"changes": result.changes, "burned_in_flag": result.burned_in,
                 "status": "quarantined" if quarantined else "written"}
        self.files[rel_path] = entry
        if quarantined:
            self.quarantined[rel_path] = result.burned_in or ""

    def as_dict(self) -> dict[str, Any]:
        counts: Counter = Counter()
        for entry in self.files.values():
            for action, names in entry["changes"].items():
                counts[action] += len(names)
                counts["private_removed"] += sum(n.endswith(" private") for n in names
                                                 if action == "removed")
        return {
            "profile": f"PS3.15 E.1 Basic Profile (dicom-anonymizer {PROFILE_TABLE})",
            "settings": self.settings.model_dump(),
            "n_written": sum(e["status"] == "written" for e in self.files.values()),
            "n_quarantined": len(self.quarantined),
            "skipped": dict(self.skipped),
            "attribute_counts": dict(counts),
            "quarantined": self.quarantined,
            "files": self.files,
        }


def output_name(result: DeidResult) -> str:
    """``<patient>/<study>/<instance>.dcm``: pseudonyms only."""
    return f"{result.patient}/{result.study}/{result.instance}.dcm"


def write_dataset(ds: Any, path: Path) -> None:
    """Save atomically as a DICOM Part 10 file."""
    from medsec.io import write_atomic

    write_atomic(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


def deidentify_one(ds: Any, out_dir: Path, pseudo: Pseudonymizer, settings: DeidSettings,
                   report: DeidReport, quarantine_dir: Path | None = None) -> DeidResult:
    """De-identify ``ds`` and write it under ``out_dir`` (or, when flagged for burned-in text
    and not allowed, under ``quarantine_dir`` if given, else nowhere); record it."""
    result = deidentify_dataset(ds, pseudo, settings)
    rel = output_name(result)
    quarantine = result.burned_in is not None and not settings.allow_burned_in
    if not quarantine:
        write_dataset(result.dataset, out_dir / rel)
    elif quarantine_dir is not None:
        write_dataset(result.dataset, quarantine_dir / rel)
    report.add(result, rel, quarantine)
    return result


def iter_dicom_files(src: Path) -> Iterator[Any]:
    """Every file under ``src`` (sorted) as a pydicom Dataset, or None when not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        try:
            yield pydicom.dcmread(path)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            yield None


LabelFn = Callable[[Any], "str | None"]
"""Label of an ORIGINAL dataset (read before de-identification), None when it has none."""


def deidentify_datasets(datasets: Iterable[Any], out_dir: str | Path, settings: DeidSettings,
                        key: bytes, labels: LabelFn | None = None,
                        quarantine_dir: str | Path | None = None,
                        extra_json: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """De-identify ``datasets`` (pydicom Datasets, None for a non-DICOM input) into a fresh
    ``out_dir`` (replaced atomically: a snapshot), with ``deid_report.json`` and, when
    ``labels`` is given, ``manifest.csv`` (``path,label,patient_id,study_id``: paths relative
    to ``out_dir``, pseudonymous ids) and the ``extra_json`` files. Returns the report.
    Inputs without pixel data, and without a label when ``labels`` is given, are skipped and
    counted, never named."""
    import csv
    import io

    from medsec.io import atomic_dir, write_json, write_text

    pseudo = Pseudonymizer(key)
    report = DeidReport(settings)
    qdir = Path(quarantine_dir) if quarantine_dir is not None else None
    rows: list[tuple[str, str, str, str]] = []
    with atomic_dir(out_dir) as tmp:
        for ds in datasets:
            if ds is None:
                report.skipped["not_dicom"] += 1
                continue
            if "PixelData" not in ds:
                report.skipped["no_pixel_data"] += 1
                continue
            label = labels(ds) if labels is not None else None
            if labels is not None and not label:
                report.skipped["unlabelled"] += 1
                continue
            result = deidentify_one(ds, tmp, pseudo, settings, report, qdir)
            if labels is not None and report.files[output_name(result)]["status"] == "written":
                rows.append((output_name(result), str(label), result.patient, result.study))
        data = report.as_dict()
        write_json(tmp / REPORT_FILE, data)
        for name, content in (extra_json or {}).items():
            write_json(tmp / name, content)
        if labels is not None:
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(sorted(rows))
            write_text(tmp / MANIFEST_FILE, buf.getvalue())
    return data


def deidentify_tree(src: str | Path, out_dir: str | Path, settings: DeidSettings,
                    key: bytes, labels: LabelFn | None = None,
                    quarantine_dir: str | Path | None = None) -> dict[str, Any]:
    """:func:`deidentify_datasets` over every file under the folder ``src``."""
    src, out = Path(src).resolve(), Path(out_dir).resolve()
    if not src.is_dir():
        raise DataError(f"{src}: not a folder of DICOM files")
    if out == src or src in out.parents:
        raise ConfigError(f"{out}: the de-identified output must lie outside the input folder")
    return deidentify_datasets(iter_dicom_files(src), out, settings, key, labels,
                               quarantine_dir)


# --- labels for the manifest (read from the ORIGINAL header or a CSV outside the repo) --------

LABEL_KEYS = ("accession_number", "study_instance_uid")


def label_from_tag(keyword: str) -> LabelFn:
    """Label = the value of the DICOM attribute ``keyword`` (e.g. ``StudyDescription``) in the
    original header. The value is written to the manifest verbatim: use an attribute that holds
    a class name, never free text that may name a person."""
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise ConfigError(f"label tag {keyword!r} is not a DICOM keyword (e.g. StudyDescription)")

    def label(ds: Any) -> str | None:
        value = str(ds.get(keyword, "") or "").strip()
        return value or None

    return label


def label_from_csv(path: str | Path) -> LabelFn:
    """Labels from a CSV ``label`` column keyed by ``accession_number`` or
    ``study_instance_uid`` (the ORIGINAL values, as the hospital knows them). The file holds
    identifiers, so it must lie outside any git working tree; only labels reach the manifest."""
    import csv

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"label CSV {path} does not exist")
    if in_git_worktree(path):
        raise ConfigError(f"label CSV {path} lies in a git working tree; it holds accession "
                          "numbers or study UIDs: keep it outside any repository")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        keys = [k for k in LABEL_KEYS if k in columns]
        if "label" not in columns or not keys:
            raise ConfigError(f"label CSV {path}: needs a 'label' column and one of "
                              f"{', '.join(LABEL_KEYS)}; found {', '.join(sorted(columns))}")
        key = keys[0]
        table = {row[key].strip(): row["label"].strip() for row in reader if row.get(key)}
    attribute = "AccessionNumber" if key == "accession_number" else "StudyInstanceUID"

    def label(ds: Any) -> str | None:
        return table.get(str(ds.get(attribute, "") or "").strip()) or None

    return label


def label_source(tag: str | None, csv_path: str | Path | None) -> LabelFn:
    """Exactly one of a DICOM keyword (:func:`label_from_tag`) or a CSV
    (:func:`label_from_csv`)."""
    if (tag is None) == (csv_path is None):
        raise ConfigError("give exactly one label source: --label-tag KEYWORD or --labels CSV")
    return label_from_tag(tag) if tag is not None else label_from_csv(csv_path)
