"""Data flow: the raw source (``data/`` or ``$MEDSEC_DATA_DIR``) -> ``prepared/``."""

from __future__ import annotations

from prefect import flow

from flows.outputs import PREPARED, at
from medsec.data.prepare import INFO_FILE, read_info
from tasks.common import load_config_task, prepare_dataset_task
from tasks.tracking import log_artifact, log_metrics, tracked_run


@flow(name="data")
def data_flow(config: str | None = None, preset: str | None = None,
              overrides: list[str] | None = None, out: str = ".") -> dict:
    """Write ``prepared/`` (phantoms generated from ``phantoms``, the raw MedMNIST file checked
    and copied, or own images read, resized and split by patient) and
    ``prepared/dataset.json``; returns the latter."""
    cfg = load_config_task(config, preset, overrides)
    prepared = at(out, PREPARED)  # out: the output root (a run dir for `medsec run`)
    data = prepare_dataset_task(cfg, prepared)
    info = read_info(prepared) or {}
    tags = {"medsec.verification": data.verification,
            "medsec.data_source": str(info.get("data_source", ""))
            or ("phantoms" if data.synthetic else "medmnist")}
    with tracked_run("data", cfg, data.version, tags=tags):
        metrics = {f"n_{split}": float(n) for split, n in info["counts"].items()}
        metrics |= {f"n_patients_{split}": float(c["patients"])
                    for split, c in (info.get("patients") or {}).items()}
        log_metrics(metrics)
        log_artifact(prepared / INFO_FILE, "data")
    return info


if __name__ == "__main__":
    data_flow()
