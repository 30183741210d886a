"""Report tasks: MedSec runs out of MLflow (by tags) as plain records, artifacts included.

Any store works: the project's SQLite store, another checkout's, a tracking server
(``MEDSEC_TRACKING_URI``). Only FINISHED runs with a ``medsec.stage`` tag are read.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from medsec.report.records import RunRecord

REPORT_ARTIFACTS = re.compile(r"(robustness/examples\.png|deepfake/(samples|tampering)\.png|"
                              r"segmentation/[^/]*overlay\.png|"
                              r"privacy/[^/]*roc[^/]*\.(csv|json|png))$", re.IGNORECASE)
"""Artifacts the report shows (example grids, membership ROC points)."""
ARTIFACT_DIRS = {"attack": ("robustness", "segmentation"), "deepfake": ("deepfake",),
                 "privacy": ("privacy",)}
"""Artifact folders listed per stage (other stages' runs are not listed: a store with
thousands of runs stays quick to report on)."""


def _record(run, artifacts: dict[str, Path]) -> RunRecord:
    return RunRecord(run.info.run_id, dict(run.data.tags), dict(run.data.metrics),
                     dict(run.data.params), int(run.info.start_time or 0),
                     int(run.info.end_time) if run.info.end_time else None, artifacts)


def _artifacts(client, run, into: Path) -> dict[str, Path]:
    """Download the :data:`REPORT_ARTIFACTS` of a run into ``into/<run_id>``."""
    found: dict[str, Path] = {}
    run_id = run.info.run_id
    for folder in ARTIFACT_DIRS.get(run.data.tags.get("medsec.stage", ""), ()):
        try:
            listed = client.list_artifacts(run_id, folder)
        except Exception:  # noqa: BLE001 - a store without that folder
            continue
        for item in listed:
            if not item.is_dir and REPORT_ARTIFACTS.search(item.path):
                local = client.download_artifacts(run_id, item.path, str(into / run_id))
                found[item.path] = Path(local)
    return found


def search_filter(dataset: str | None = None, commit: str | None = None,
                  dvc_exp: str | None = None) -> str:
    """MLflow filter string on the MedSec tags (FINISHED runs only); ``dvc_exp``: runs of
    that ``dvc exp run`` experiment (tag ``medsec.dvc_exp``, see tasks.tracking)."""
    from medsec.errors import DataError

    for name, value in (("dataset", dataset), ("commit", commit), ("experiment", dvc_exp)):
        if value and not SAFE_VALUE.match(value):
            raise DataError(f"{name} {value!r}: only letters, digits and . _ - / are allowed")
    parts = ["attributes.status = 'FINISHED'"]
    if dataset:
        parts.append(f"tags.`medsec.dataset` = '{dataset}'")
    if commit:
        parts.append(f"tags.`medsec.git_commit` LIKE '{commit}%'")
    if dvc_exp:
        parts.append(f"tags.`medsec.dvc_exp` = '{dvc_exp}'")
    return " and ".join(parts)


SAFE_VALUE = re.compile(r"^[\w.\-/]+$")


def dvc_exp_commits(name: str, root: Path) -> list[str]:
    """Commits of the ``dvc exp`` experiment ``name`` in the git repository at ``root``: the
    refs ``refs/exps/<baseline[:2]>/<baseline[2:]>/<name>`` DVC keeps per experiment (what
    ``dvc exp show`` lists); empty when there is none (or no git)."""
    try:
        out = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)",
                              "refs/exps/"], cwd=root, capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    commits = []
    for line in out.splitlines():
        sha, _, ref = line.partition(" ")
        parts = ref.split("/")  # refs, exps, ab, cdef..., name
        if len(parts) == 5 and len(parts[2]) == 2 and parts[4] == name:
            commits.append(sha)
    return commits


@task(name="fetch-runs", cache_policy=NO_CACHE)
def fetch_runs_task(tracking_uri: str, artifact_dir: str | Path, dataset: str | None = None,
                    commit: str | None = None, run_ids: list[str] | None = None,
                    dvc_exp: str | None = None) -> list[RunRecord]:
    """Every FINISHED MedSec run of every experiment of the store at ``tracking_uri``
    (``dataset``/``commit`` prefix/``dvc_exp`` name filters; or exactly ``run_ids``), with
    the report's artifacts downloaded under ``artifact_dir``."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    into = Path(artifact_dir)
    if run_ids:
        runs = []
        for run_id in run_ids:
            try:
                runs.append(client.get_run(run_id))
            except mlflow.exceptions.MlflowException:
                from medsec.errors import DataError

                raise DataError(f"no run {run_id!r} in the tracking store") from None
    else:
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = []
        token = None
        while experiments:
            page = client.search_runs(experiments, search_filter(dataset, commit, dvc_exp),
                                      max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
    return [_record(run, _artifacts(client, run, into)) for run in runs
            if run.data.tags.get("medsec.stage")]
