"""``medsec report --compare A B`` with ``dvc exp`` names: a tiny git+DVC repo whose stage logs
an evaluate and a privacy run through MedSec's tracking (tasks.tracking.tracked_run), run as two
real ``dvc exp run -n A/-n B --set-param`` experiments; the comparison must follow the names."""

from __future__ import annotations

import subprocess

import pytest

import mlflow
from tests.integration.helpers import BIN, REPO_ROOT, env_with, run

pytestmark = pytest.mark.integration

STAGE = '''\
"""One evaluate and one privacy (checkpoint audit) run with the figures of params.yaml."""
import yaml

from medsec.config import load_config
from tasks.tracking import log_metrics, tracked_run

p = yaml.safe_load(open("params.yaml"))
cfg = load_config(None, "tiny", [])
with tracked_run("evaluate", cfg, "v1"):
    log_metrics({"test_acc": p["acc"]})
with tracked_run("privacy", cfg, "v1", tags={"medsec.audit": "checkpoint",
                                            "medsec.privacy": "none"}):
    log_metrics({"mia_auc": p["mia"], "mia_auc_ci_low": p["mia"] - 0.05,
                 "mia_auc_ci_high": p["mia"] + 0.05})
'''
DVC_YAML = """\
stages:
  log:
    cmd: python log_runs.py
    deps: [log_runs.py]
    params: [acc, mia]
"""


@pytest.fixture(scope="module")
def exp_repo(tmp_path_factory):
    """The repo after ``dvc exp run -n A`` (acc 0.7, mia 0.55) and ``-n B`` (0.8, 0.75)."""
    root = tmp_path_factory.mktemp("dvcexp")
    repo = root / "repo"
    repo.mkdir()
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    env = env_with(MEDSEC_TRACKING_URI=uri, PREFECT_HOME=str(root / "prefect"),
                   PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
                   GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@medsec.local",
                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@medsec.local")
    (repo / "log_runs.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("acc: 0.5\nmia: 0.5\n")
    dvc = str(BIN / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", "baseline"]):
        out = run(cmd, repo, env)
        assert out.returncode == 0, out.stderr
    for name, acc, mia in (("A", 0.7, 0.55), ("B", 0.8, 0.75)):
        out = run([dvc, "exp", "run", "-q", "-n", name, "-S", f"acc={acc}", "-S", f"mia={mia}"],
                  repo, env)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    baseline = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    return {"repo": repo, "uri": uri, "env": env, "baseline": baseline}


def _compare(exp_repo, monkeypatch, a: str, b: str):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("MEDSEC_TRACKING_URI", exp_repo["uri"])
    monkeypatch.setenv("PREFECT_HOME", exp_repo["env"]["PREFECT_HOME"])
    monkeypatch.chdir(exp_repo["repo"])
    return CliRunner().invoke(app, ["report", "--preset", "tiny", "--compare", a, b])


def test_every_run_of_an_experiment_is_tagged_with_its_name(exp_repo):
    client = mlflow.MlflowClient(exp_repo["uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 4
    by_exp = {}
    for r in runs:
        assert r.data.tags["medsec.dvc_exp_baseline"] == exp_repo["baseline"]
        by_exp.setdefault(r.data.tags["medsec.dvc_exp"], []).append(r)
    assert {k: sorted(r.data.tags["medsec.stage"] for r in v) for k, v in by_exp.items()} == {
        "A": ["evaluate", "privacy"], "B": ["evaluate", "privacy"]}
    assert {r.data.metrics["test_acc"] for r in by_exp["A"] if "test_acc" in r.data.metrics} \
        == {0.7}


def test_compare_two_experiment_names(exp_repo, monkeypatch):
    result = _compare(exp_repo, monkeypatch, "A", "B")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "| small_cnn / standard | ACC | 0.700 | 0.800 | +0.100 | no interval logged |" in out
    assert ("| small_cnn / standard | MIA AUC | 0.550 [0.500, 0.600] | 0.750 [0.700, 0.800] "
            "| +0.200 | intervals disjoint |") in out
    swapped = _compare(exp_repo, monkeypatch, "B", "A").output
    assert "| ACC | 0.800 | 0.700 | -0.100 |" in swapped
    assert "| MIA AUC | 0.750 [0.700, 0.800] | 0.550 [0.500, 0.600] | -0.200 |" in swapped


def test_unknown_experiment_name_is_one_line_and_exit_2(exp_repo, monkeypatch):
    result = _compare(exp_repo, monkeypatch, "A", "no-such-exp")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "'no-such-exp'" in lines[0], result.output


def test_name_without_tagged_runs_is_found_through_its_git_ref(exp_repo, monkeypatch):
    """Runs logged before the tag existed: the name still resolves (refs/exps/../A) to the
    experiment's commit; with no run at that commit the error names the experiment."""
    from tasks.report import dvc_exp_commits

    refs = run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/"],
               exp_repo["repo"], exp_repo["env"]).stdout.split("\n")
    (sha_a,) = [line.split()[0] for line in refs if line.endswith("/A")]
    assert dvc_exp_commits("A", exp_repo["repo"]) == [sha_a]
    assert dvc_exp_commits("no-such-exp", exp_repo["repo"]) == []
    show = subprocess.run([str(BIN / "dvc"), "exp", "show", "--json"], cwd=exp_repo["repo"],
                          env=exp_repo["env"], capture_output=True, text=True, timeout=120)
    assert sha_a in show.stdout  # the same commit DVC lists for experiment A
    client = mlflow.MlflowClient(exp_repo["uri"])
    ids = [e.experiment_id for e in client.search_experiments()]
    tagged = client.search_runs(ids, "tags.`medsec.dvc_exp` = 'A'")
    for r in tagged:
        client.delete_tag(r.info.run_id, "medsec.dvc_exp")
    try:
        result = _compare(exp_repo, monkeypatch, "A", "B")
    finally:
        for r in tagged:
            client.set_tag(r.info.run_id, "medsec.dvc_exp", "A")
    assert result.exit_code == 2
    assert f"dvc experiment 'A' (commit {sha_a[:7]})" in result.output, result.output
