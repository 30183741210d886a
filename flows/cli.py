"""``medsec`` command line: run the pipeline or one stage, list things, open the MLflow UI."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from flows import resolve_flow  # (importing flows sets Prefect/GX environment defaults)
from medsec.errors import MedSecError
from medsec.stages.pipeline import STAGE_NAMES, get_stage

app = typer.Typer(help="MedSec: security and privacy benchmark for medical-imaging models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Manage the raw data in data/.", no_args_is_help=True)
app.add_typer(data_app, name="data")
server_app = typer.Typer(help="MLflow tracking server on PostgreSQL (127.0.0.1).",
                         no_args_is_help=True)
app.add_typer(server_app, name="server")
StateDirOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="Where the cluster, artifacts and logs live (default .medsec/server).")]

STAGES = STAGE_NAMES  # medsec/stages/pipeline.py: the one table of stages
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config file.")]
PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="configs/presets/<name>")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override: key.sub=value")]


_DEBUG = {"on": False}
PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and Prefect's "
                                    "failure logs instead of one line per error.")) -> None:
    """SIGTERM exits like Ctrl-C: open MLflow runs end KILLED, the Prefect server stops."""
    _DEBUG["on"] = debug
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _fail(exc: Exception) -> None:
    """One line on stderr (the traceback too with ``--debug``), exit code 2."""
    if _DEBUG["on"]:
        traceback.print_exception(exc)
    line = " ".join(part.strip() for part in str(exc).splitlines())
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run_flow(flow_fn: Any, **kwargs: Any) -> Any:
    """Call a flow on a private Prefect server that dies with this process (flows/server.py).

    A MedSecError (bad config or input) raised inside it is reported by :func:`_fail` only:
    Prefect's own failure log (a traceback) is silenced unless ``--debug``.
    """
    from flows.server import prefect_server

    if not _DEBUG["on"]:
        for name in PREFECT_RUN_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with prefect_server():
            return flow_fn(**kwargs)
    except MedSecError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=130) from None


@app.command()
def run(preset: PresetOpt = "default", config: ConfigOpt = None, set: SetOpt = None) -> None:
    """Run the benchmark stages (data -> validate -> train -> evaluate -> attack) as one
    Prefect flow, in a new run directory ``runs/<UTC time>-<pid>-<hex>/`` (never the DVC
    outputs); one MLflow pipeline run with one child run per stage."""
    from flows.benchmark import benchmark_flow
    from medsec.config import load_config
    from tasks.tracking import check_tracking_server

    try:  # fail fast, before Prefect starts: bad config, unreachable tracking server
        check_tracking_server(load_config(config, preset or "default", set or []))
    except MedSecError as exc:
        _fail(exc)
    result = _run_flow(benchmark_flow, preset=preset or "default", config=config,
                       overrides=set or [])
    typer.echo(f"done: {result['run_dir']}; MLflow pipeline run {result['pipeline_run_id']}; "
               "test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in result["test"].items()
                                            if k in ("test_acc", "test_auc", "test_f1")))


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help=f"one of {', '.join(STAGES)}")],
    config: ConfigOpt = None, preset: PresetOpt = None, set: SetOpt = None,
) -> None:
    """Run one pipeline stage (what the DVC stages call).

    Without ``--config`` and ``--preset`` the stage reads ``params.yaml``; with ``--preset``
    only the preset (and ``--set``) applies, so params.yaml cannot override it.
    """
    if config is None and preset is None:
        config = "params.yaml"
    if name not in STAGES:
        _fail(ValueError(f"unknown stage {name!r}; known: {', '.join(STAGES)}"))
    entry = get_stage(name)
    flow_fn = resolve_flow(entry.flow)
    from medsec.config import load_config
    from tasks.tracking import check_tracking_server

    kwargs = {"progress": True} if entry.progress else {}
    try:  # fail fast, before Prefect starts: bad config, unreachable tracking server
        check_tracking_server(load_config(config, preset, set or []))
        _run_flow(flow_fn, config=config, preset=preset, overrides=set or [], **kwargs)
    except MedSecError as exc:
        _fail(exc)


@app.command()
def report(
    config: ConfigOpt = None, preset: PresetOpt = None, set: SetOpt = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset's runs.")] = None,
    commit: Annotated[str | None, typer.Option(help="Only runs of this commit (prefix).")] = None,
    compare: Annotated[tuple[str, str] | None, typer.Option(
        help="Two run ids, dvc exp names or commit prefixes A B: what changed per "
             "column.")] = None,
) -> None:
    """The trust report: one leaderboard per dataset from every finished run of the tracking
    store (reports/trust_report.html, reports/trust_report.md, metrics/leaderboard.json), or
    with ``--compare A B`` what changed between two runs, dvc experiments or commits."""
    from medsec.config import load_config

    if config is None and preset is None:
        config = "params.yaml" if Path("params.yaml").is_file() else None
    try:
        load_config(config, preset, set or [])
    except MedSecError as exc:
        _fail(exc)
    kwargs = {"config": config, "preset": preset, "overrides": set or []}
    if compare:
        from flows.report import compare_flow

        typer.echo(_run_flow(compare_flow, a=compare[0], b=compare[1], **kwargs), nl=False)
        return
    from flows.report import report_flow

    result = _run_flow(report_flow, dataset=dataset, commit=commit, **kwargs)
    typer.echo(f"trust report: {result['html']} ({result['n_figures']} figures), "
               f"{result['markdown']}, {result['leaderboard']}; MLflow run {result['run_id']}")


RAW_README = """# data/: the raw input folder (versioned by data.dvc, never edited by the pipeline)

Put source files here, e.g. MedMNIST `<name>.npz` (or point MEDSEC_DATA_DIR elsewhere).
The data stage (`medsec stage data`) turns them into prepared/, which every later stage reads;
the built-in SYNTHETIC phantoms are generated there from the `phantoms` params. A
`phantoms.npz` placed here is used instead, as a fixed phantom set.
"""


@data_app.command("init")
def data_init(config: ConfigOpt = "params.yaml", set: SetOpt = None,
              phantoms: bool = typer.Option(False, help="Also write a fixed phantom set "
                                            "(from the phantoms params) into the folder."),
              force: bool = typer.Option(False, help="Rewrite the phantom set if present.")
              ) -> None:
    """Create the raw data folder that data.dvc versions (offline; same bytes every time)."""
    from medsec.config import load_config
    from medsec.data.medmnist import resolve_data_dir
    from medsec.data.phantoms import PHANTOM_FILE
    from medsec.io import write_text
    from medsec.stages.data import data_source

    try:
        cfg = load_config(config if config and Path(config).is_file() else None,
                          overrides=set or [])
    except MedSecError as exc:
        _fail(exc)
    folder = resolve_data_dir(cfg.dataset.data_dir)
    readme = folder / "README.md"
    if not readme.is_file() or readme.read_text() != RAW_README:
        write_text(readme, RAW_README)
    path = folder / PHANTOM_FILE
    if phantoms and (force or not path.is_file()):
        data_source(cfg).phantoms.write(path)
        typer.echo(f"wrote a fixed SYNTHETIC phantom set to {path}")
    elif path.is_file():
        typer.echo(f"{path} is used as a fixed phantom set (the phantoms params are not); "
                   "delete it to generate the phantoms from the params")
    typer.echo(f"raw data folder: {folder}")


LabelTagOpt = Annotated[str | None, typer.Option(
    "--label-tag", help="Label = this DICOM attribute of the original header (e.g. "
    "StudyDescription); must hold class names.")]
LabelsOpt = Annotated[Path | None, typer.Option(
    "--labels", help="CSV outside the repository: label + accession_number or "
    "study_instance_uid (original values).")]
LongitudinalOpt = Annotated[bool, typer.Option(
    "--retain-longitudinal", help="Shift dates per patient (keyed) instead of removing them.")]
BurnedInOpt = Annotated[bool, typer.Option(
    "--allow-burned-in", help="Write images flagged for burned-in text instead of "
    "quarantining them.")]
QuarantineOpt = Annotated[Path | None, typer.Option(
    "--quarantine", help="Folder (outside data/) for the quarantined, header-de-identified "
    "images; by default they are not written.")]


def _deid_summary(report: dict, out: Path) -> str:
    skipped = sum(report["skipped"].values())
    return (f"{report['n_written']} image(s) de-identified into {out}, "
            f"{report['n_quarantined']} quarantined (burned-in text), {skipped} skipped; "
            f"manifest {out / 'manifest.csv'}, report {out / 'deid_report.json'}")


@data_app.command("pull")
def data_pull(
    url: Annotated[str | None, typer.Option(help="DICOMweb root, e.g. "
                                            "http://127.0.0.1:8042/dicom-web")] = None,
    dimse: Annotated[str | None, typer.Option(help="HOST:PORT for DIMSE C-FIND/C-GET "
                                              "instead of DICOMweb")] = None,
    called_aet: Annotated[str, typer.Option(help="The PACS's AE title (DIMSE)")] = "ORTHANC",
    aet: Annotated[str, typer.Option(help="Our AE title, registered at the PACS (DIMSE)")
                   ] = "MEDSEC",
    out: Annotated[Path, typer.Option(help="Raw data folder to write (replaced)")
                   ] = Path("data/pacs"),
    label_tag: LabelTagOpt = None, labels: LabelsOpt = None,
    filter: Annotated[list[str] | None, typer.Option(
        "--filter", help="Study query KEY=VALUE, e.g. ModalitiesInStudy=CT (repeatable)")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many studies")] = None,
    retain_longitudinal: LongitudinalOpt = False, allow_burned_in: BurnedInOpt = False,
    quarantine: QuarantineOpt = None,
) -> None:
    """Pull studies from a PACS, de-identify them on the way in, write a manifest.

    Credentials: $MEDSEC_PACS_USER/$MEDSEC_PACS_PASSWORD or $MEDSEC_PACS_CREDENTIALS_FILE;
    de-identification key: $MEDSEC_DEID_KEY or $MEDSEC_DEID_KEY_FILE (never the config)."""
    from medsec.data import deid, pacs

    try:
        if (url is None) == (dimse is None):
            raise MedSecError("give exactly one of --url (DICOMweb) or --dimse HOST:PORT")
        settings = deid.DeidSettings(retain_longitudinal=retain_longitudinal,
                                     allow_burned_in=allow_burned_in)
        key, label_fn = deid.load_key(), deid.label_source(label_tag, labels)
        bad = [item for item in filter or [] if "=" not in item]
        if bad:
            raise MedSecError(f"--filter {bad[0]!r} must look like KEY=VALUE")
        filters = dict(item.split("=", 1) for item in filter or [])
        if dimse is not None:
            host, _, port = dimse.rpartition(":")
            client = pacs.DimseClient(host, int(port), called_aet, aet)
        else:
            client = pacs.DicomWebClient(url, pacs.load_credentials())
        report = pacs.pull(client, out, settings, key, label_fn, filters, limit, quarantine)
    except (MedSecError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"pulled {report['n_studies']} study(ies): " + _deid_summary(report, out))


@data_app.command("deid")
def data_deid(
    src: Annotated[Path, typer.Argument(help="Folder of DICOM files (any names)")],
    out: Annotated[Path, typer.Argument(help="Raw data folder to write (replaced)")],
    label_tag: LabelTagOpt = None, labels: LabelsOpt = None,
    retain_longitudinal: LongitudinalOpt = False, allow_burned_in: BurnedInOpt = False,
    quarantine: QuarantineOpt = None,
) -> None:
    """De-identify a local folder of DICOM files into OUT (pseudonymous names, manifest,
    report), the same way `medsec data pull` does."""
    from medsec.data import deid

    try:
        settings = deid.DeidSettings(retain_longitudinal=retain_longitudinal,
                                     allow_burned_in=allow_burned_in)
        report = deid.deidentify_tree(src, out, settings, deid.load_key(),
                                      deid.label_source(label_tag, labels), quarantine)
    except MedSecError as exc:
        _fail(exc)
    typer.echo(_deid_summary(report, out))


@app.command()
def datasets() -> None:
    """List the dataset names the pipeline can read."""
    from medsec.data.medmnist import MEDMNIST_2D
    from medsec.data.phantoms import PHANTOM_NAME

    typer.echo(f"{PHANTOM_NAME:16s} built-in SYNTHETIC phantoms (lesion / no lesion, masks)")
    for name, info in MEDMNIST_2D.items():
        note = " (multi-label: not supported)" if info.multi_label else ""
        typer.echo(f"{name:16s} MedMNIST 2D, {len(info.class_names)} classes, "
                   f"{info.n_channels} channel(s){note}")


@app.command()
def models() -> None:
    """List the model names."""
    from medsec.models.factory import MODELS

    for name, spec in MODELS.items():
        typer.echo(f"{name:12s} {spec.description}")


@app.command()
def presets() -> None:
    """List the presets in configs/presets."""
    from medsec.config import PRESET_DIR

    for path in sorted(PRESET_DIR.glob("*.yaml")):
        first = path.read_text().splitlines()[0].lstrip("# ") if path.read_text() else ""
        typer.echo(f"{path.stem:16s} {first}")


@app.command()
def ui(port: int = 5000, host: str = "127.0.0.1") -> None:
    """Open the MLflow UI on the project's tracking store (127.0.0.1 by default)."""
    from tasks.tracking import artifact_root, resolve_tracking_uri

    uri = resolve_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    root = artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    typer.echo(f"MLflow UI on http://{host}:{port}  (store: {uri})")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    raise typer.Exit(subprocess.call(cmd, env=env))


@server_app.command("up")
def server_up(state_dir: StateDirOpt = None) -> None:
    """Start PostgreSQL and an MLflow server on it (proxied artifacts); print the URI."""
    from flows.tracking_server import up

    try:
        state = up(state_dir)
    except MedSecError as exc:
        _fail(exc)
    typer.echo(f"MLflow tracking server on {state.tracking_uri} (PostgreSQL on 127.0.0.1:"
               f"{state.pg_port}); use it with:\nexport MEDSEC_TRACKING_URI="
               f"{state.tracking_uri}")


@server_app.command("down")
def server_down(state_dir: StateDirOpt = None) -> None:
    """Stop the MLflow server and PostgreSQL (data and artifacts are kept)."""
    from flows.tracking_server import down

    try:
        stopped = down(state_dir)
    except MedSecError as exc:
        _fail(exc)
    typer.echo("stopped" if stopped else "no server was started here")


@server_app.command("status")
def server_status(state_dir: StateDirOpt = None) -> None:
    """Whether PostgreSQL and the MLflow server run; exit code 1 unless both do."""
    from flows.tracking_server import status

    try:
        found = status(state_dir)
    except MedSecError as exc:
        _fail(exc)
    typer.echo(f"postgres: {'up' if found['postgres'] else 'down'}; mlflow: "
               f"{'up' if found['mlflow'] else 'down'}; tracking URI: {found['tracking_uri']}")
    raise typer.Exit(0 if found["postgres"] and found["mlflow"] else 1)


if __name__ == "__main__":
    app()
