"""Segmentation flow: train a MONAI segmenter on image/mask data, evaluate it, attack it
(untargeted, erase, inject), and log everything to MLflow and DVC files.

The data first goes through the project's Great Expectations suite (images and masks; a hard
failure stops the flow before training; report in ``outputs/segmentation/validation/``).
MLflow: one run tagged ``medsec.stage=train`` (data checks as ``data_*``, clean metrics,
checkpoint) and one run per attack tagged ``medsec.stage=attack``, ``medsec.attack=<name>``
(metrics, overlay figure, dataset); all carry ``medsec.task=segmentation``. Files:
``models/segmenter.pt``, ``metrics/segmentation.json``,
``outputs/segmentation/<attack>.{npz,json}``, ``outputs/segmentation/scorecard.md`` (every
attack on every segmenter in one table; also an artifact of the first train run),
``plots/segmentation_curve.{csv,png}`` (Dice against the budget, PGD and noise). With
``segmentation.adversarial_training`` a PGD-adversarially-trained segmenter is trained and
attacked the same way (runs tagged ``medsec.defense=pgd_at``, files in
``outputs/segmentation/pgd_at/``; the undefended model's adversarial images are also scored
on it as a black-box transfer attack, ``metrics["defended"]["pgd_at"]["transfer"]``); the
first one is tagged ``medsec.defense=none``.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.outputs import METRICS, MODELS, PLOTS, write_curve, write_metrics
from medsec.config import MedSecConfig
from medsec.data.validation import raise_if_failed, write_report
from medsec.io import write_text
from medsec.segmentation.config import SegAdversarialTraining, SegmentationConfig
from medsec.segmentation.data import SegData
from medsec.segmentation.dataset import save_seg_adversarial
from medsec.segmentation.job import SegAttackResult, TrainedSegmenter, transfer_metrics
from medsec.segmentation.models import save_segmenter
from medsec.segmentation.scorecard import curve_rows, scorecard_markdown
from medsec.segmentation.viz import overlay_figure
from medsec.viz import robustness_curve_figure
from tasks.common import load_config_task, load_phantoms_task
from tasks.segmentation import (
    evaluate_segmenter_task,
    seg_attack_task,
    seg_data_task,
    train_segmenter_task,
    validate_seg_data_task,
)
from tasks.tracking import (
    log_artifact,
    log_figure,
    log_metrics,
    log_training_device,
    tracked_run,
)

SEGMENTATION_DIR = Path("outputs") / "segmentation"
DEFENDED_DIR = SEGMENTATION_DIR / "pgd_at"


def _train(seg: SegmentationConfig, data: SegData, adversarial: SegAdversarialTraining | None,
           checkpoint: Path) -> tuple[TrainedSegmenter, dict[str, float]]:
    """Train (inside the active MLflow run), log the clean scores, save the checkpoint."""
    trained = train_segmenter_task(seg, data, adversarial)
    clean = evaluate_segmenter_task(trained, data)
    log_metrics(clean | {"best_epoch": trained.fit.best_epoch, "fit_seconds": trained.fit.seconds})
    log_training_device({"device": trained.fit.device, "precision": trained.fit.precision})
    save_segmenter(checkpoint, trained.model, trained.meta)
    log_artifact(checkpoint, "model")
    return trained, clean


def _attack_all(cfg: MedSecConfig, data: SegData, trained: TrainedSegmenter, source_run: str,
                tags: dict[str, str], out_dir: Path,
                ) -> tuple[dict[str, dict], dict[str, str], list[SegAttackResult]]:
    """One MLflow run per configured attack; adversarial datasets into ``out_dir``. Returns
    the metrics and run ids by attack name, and the results (for transfer scoring)."""
    seg = cfg.segmentation
    source = {"mlflow_run_id": source_run, "model": seg.model, "dataset": data.name,
              "data_version": data.version, "defense": trained.meta["defense"]}
    attacks: dict[str, dict[str, float]] = {}
    run_ids: dict[str, str] = {}
    results: list[SegAttackResult] = []
    for spec in seg.attacks:
        with tracked_run("attack", cfg, data.version,
                         tags=tags | {"medsec.attack": spec.name,
                                      "medsec.source_run_id": source_run},
                         run_name=f"segmentation-{spec.name}-{data.name}-"
                                  f"{trained.meta['defense']}") as attack_run:
            result = seg_attack_task(trained, spec, data, seg)
            log_metrics(result.metrics)
            log_figure(overlay_figure(result, seg.n_figure, f"{data.name}: {spec.name}"),
                       f"segmentation/{spec.name}_overlay.png")
            if seg.save_adversarial:
                for path in save_seg_adversarial(out_dir, result, source).values():
                    log_artifact(path, "segmentation")  # the .npz and its .json
            attacks[spec.name] = {k: v for k, v in result.metrics.items() if k != "seconds"}
            run_ids[spec.name] = attack_run.info.run_id
            results.append(result)
    return attacks, run_ids, results


@flow(name="segmentation")
def segmentation_flow(config: str | None = None, preset: str | None = None,
                      overrides: list[str] | None = None) -> dict:
    """Returns ``{"run_id", "attack_run_ids", "metrics"}`` (metrics as in the JSON file; with
    ``segmentation.adversarial_training`` also ``defended_run_id``/``defended_attack_run_ids``
    and ``metrics["defended"]["pgd_at"]``)."""
    cfg = load_config_task(config, preset, overrides)
    seg = cfg.segmentation
    loaded = load_phantoms_task(cfg) if seg.data == "phantoms" else None  # any dataset.name
    data = seg_data_task(seg, loaded)
    tags = {"medsec.task": "segmentation", "medsec.model": seg.model,
            "medsec.dataset": data.name, "medsec.defense": "none"}
    with tracked_run("train", cfg, data.version, tags=tags,
                     run_name=f"segmentation-train-{data.name}-{seg.model}") as run:
        report = validate_seg_data_task(cfg, data)
        for path in write_report(report, SEGMENTATION_DIR / "validation").values():
            log_artifact(path, "validation")
        log_metrics({f"data_{k}": v for k, v in report.summary_metrics().items()})
        raise_if_failed(report, data.names)  # failing files named in the exception only
        trained, clean = _train(seg, data, None, MODELS / "segmenter.pt")
    attacks, run_ids, results = _attack_all(cfg, data, trained, run.info.run_id, tags,
                                            SEGMENTATION_DIR)
    metrics: dict = {"clean": clean, "best_epoch": trained.fit.best_epoch, "attacks": attacks}
    out: dict = {"run_id": run.info.run_id, "attack_run_ids": run_ids, "metrics": metrics}
    if seg.adversarial_training is not None:
        at = seg.adversarial_training
        d_tags = tags | {"medsec.defense": "pgd_at"}
        with tracked_run("train", cfg, data.version, tags=d_tags,
                         run_name=f"segmentation-train-{data.name}-{seg.model}-pgd_at") as d_run:
            log_metrics({"at_eps": at.eps, "at_steps": at.steps, "at_alpha": at.step_size})
            d_trained, d_clean = _train(seg, data, at, DEFENDED_DIR / "segmenter.pt")
        d_attacks, d_ids, _ = _attack_all(cfg, data, d_trained, d_run.info.run_id, d_tags,
                                          DEFENDED_DIR)
        # black-box transfer: the undefended model's adversarial images against PGD-AT
        transfer = {r.spec.name: transfer_metrics(d_trained.model, r, data.num_classes,
                                                  seg.lesion_overlap) for r in results}
        with tracked_run("train", cfg, data.version, run_id=d_run.info.run_id):
            log_metrics({f"transfer_{name}_{k}": v for name, m in transfer.items()
                         for k, v in m.items()})
        metrics["defended"] = {"pgd_at": {"clean": d_clean, "best_epoch": d_trained.fit.best_epoch,
                                          "attacks": d_attacks, "transfer": transfer}}
        out |= {"defended_run_id": d_run.info.run_id, "defended_attack_run_ids": d_ids}
    scorecard = write_text(SEGMENTATION_DIR / "scorecard.md",
                           scorecard_markdown(metrics, seg.attacks))
    rows = curve_rows(metrics, seg.attacks)
    curve = robustness_curve_figure(rows, f"{data.name}: lesion Dice under attack", "dice",
                                    "lesion Dice")
    write_curve(rows, "dice", PLOTS / "segmentation_curve.csv", PLOTS / "segmentation_curve.png",
                curve)
    with tracked_run("train", cfg, data.version, run_id=run.info.run_id):
        log_artifact(scorecard, "segmentation")
        log_figure(curve, "segmentation/dice_curve.png")
    write_metrics(METRICS / "segmentation.json", metrics)
    return out


if __name__ == "__main__":
    segmentation_flow()
