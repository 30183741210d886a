"""Nothing identifying leaves the data stage: plant canary PHI in generated DICOM studies (in
the headers AND in the file and folder names), push them to a real Orthanc, `medsec data
pull` them, run the pipeline on the pulled data in a copy of the repository with its own
MLflow store and Prefect home, then search every byte MedSec wrote for each canary: zero hits.
The raw export and the PACS's own storage are the only places the canaries may remain."""

from __future__ import annotations

import secrets
import zipfile
from pathlib import Path

import pydicom
import pytest

from tests.dicom_factory import Identity, write_study_tree
from tests.integration.helpers import BIN, copy_repo, env_with, run
from tests.integration.orthanc import PASSWORD, USER, orthanc_server

pytestmark = pytest.mark.integration
MEDSEC = str(BIN / "medsec")
N_PATIENTS = 12


def _dataset_fields() -> set[str]:
    from medsec.config import DatasetConfig

    return set(DatasetConfig.model_fields)


def _canaries() -> tuple[list[Identity], list[str]]:
    """Random per run, so no source file (copied into the clone) can hold one by chance."""
    tok = secrets.token_hex(4)
    rng = secrets.SystemRandom()
    people = []
    for i in range(N_PATIENTS):
        birth = f"19{rng.randint(20, 69)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        study = f"19{rng.randint(70, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        people.append(Identity(patient_name=f"Canary{tok}^Zora{i:02d}",
                               patient_id=f"CPID{tok}{i:02d}", birth_date=birth,
                               accession=f"CACC{tok}{i:02d}",
                               institution=f"Cnryinst{tok} Hospital", study_date=study))
    strings = [f"Canary{tok}", f"CPID{tok}", f"CACC{tok}", f"Cnryinst{tok}"]
    strings += [p.birth_date for p in people] + [p.study_date for p in people]
    strings += [p.study_uid for p in people] + [p.series_uid for p in people]
    return people, strings


def _blobs(path: Path):
    """The file's bytes and, for zip containers (npz, MLflow/torch archives), every member's."""
    data = path.read_bytes()
    yield data
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield member.encode()
                yield archive.read(member)


def _hits(roots: list[Path], needles: list[str]) -> list[str]:
    """``"<file>: <needle>"`` for every case-insensitive occurrence (paths included)."""
    lowered = [(n, n.lower().encode()) for n in needles]
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            rel = str(path).lower()
            found += [f"{path} (name): {n}" for n, low in lowered if low.decode() in rel]
            if path.is_file() and not path.is_symlink():
                for blob in _blobs(path):
                    low_blob = blob.lower()
                    found += [f"{path}: {n}" for n, low in lowered if low in low_blob]
    return sorted(set(found))


def test_canary_phi_never_leaves_the_data_stage(tmp_path):
    people, canaries = _canaries()
    export = tmp_path / "hospital-export"  # Canary.._Zora00_CPID../CACC../Canary.._img0.dcm
    paths = write_study_tree(export, people, per_study=4, size=32)
    # positive control: the search finds every canary in what was planted
    assert {c for c in canaries if _hits([export], [c])} == set(canaries)
    assert pydicom.dcmread(paths[0]).InstitutionName.startswith("Cnryinst")

    work = copy_repo(tmp_path / "clone")
    mlflow_dir, prefect_home = tmp_path / "mlflow", tmp_path / "prefect-home"
    data_root = work / "data"
    env = env_with(MEDSEC_DEID_KEY=secrets.token_hex(16), MEDSEC_PACS_USER=USER,
                   MEDSEC_PACS_PASSWORD=PASSWORD, MEDSEC_DATA_DIR=str(data_root),
                   MEDSEC_TRACKING_URI=f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                   PREFECT_HOME=str(prefect_home), OMP_NUM_THREADS="1")
    logs = []
    with orthanc_server(tmp_path / "orthanc") as pacs:
        pacs.upload(paths)
        pull = run([MEDSEC, "data", "pull", "--url", pacs.dicomweb, "--out",
                    str(data_root / "pacs"), "--label-tag", "StudyDescription"], work, env)
        logs.append(pull)
        assert pull.returncode == 0, pull.stderr
    assert f"{4 * N_PATIENTS} image(s)" in pull.stdout
    # the local route too (a hospital export on disk), not used by the pipeline
    deid = run([MEDSEC, "data", "deid", str(export), str(tmp_path / "deid-out"),
                "--label-tag", "StudyDescription"], work, env)
    logs.append(deid)
    assert deid.returncode == 0, deid.stderr

    for i, proc in enumerate(logs):
        (tmp_path / "logs").mkdir(exist_ok=True)
        (tmp_path / "logs" / f"{i}.txt").write_text(proc.stdout + "\n" + proc.stderr)
    assert _hits([data_root, tmp_path / "deid-out", tmp_path / "logs"], canaries) == []
    if "source" not in _dataset_fields():
        pytest.skip("the pipeline part needs the manifest source of issue 15A "
                    "(dataset.source=manifest)")

    pipeline = run([MEDSEC, "run", "--preset", "tiny", "--set", "dataset.source=manifest",
                    "--set", "dataset.path=pacs/manifest.csv", "--set", "dataset.name=canary",
                    "--set", "dataset.image_size=32",
                    "--set", "attack.attacks=[{name: fgsm, eps: [8/255]}]"],
                   work, env, timeout=1200)
    logs.append(pipeline)
    assert pipeline.returncode == 0, pipeline.stdout[-3000:] + pipeline.stderr[-3000:]
    run_dirs = list((work / "runs").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "metrics" / "attack.json").is_file()

    # every output: the clone (data/, runs/ with prepared/ metrics/ reports/ models/ outputs/,
    # anything else written there), the de-identified local copy, the MLflow store and its
    # artifacts, the Prefect home (database, logs), and every command's stdout/stderr
    for i, proc in enumerate(logs):
        (tmp_path / "logs").mkdir(exist_ok=True)
        (tmp_path / "logs" / f"{i}.txt").write_text(proc.stdout + "\n" + proc.stderr)
    roots = [work, tmp_path / "deid-out", mlflow_dir, prefect_home, tmp_path / "logs"]
    assert (mlflow_dir / "mlflow.db").is_file() and any(prefect_home.rglob("*.db"))
    assert _hits(roots, canaries) == []
    # MLflow records paths relative to the data root, never the data root itself
    assert _hits([mlflow_dir], ["pacs/manifest.csv"])  # the relative path is recorded
    assert _hits([mlflow_dir], [str(data_root), str(tmp_path / "hospital-export")]) == []
