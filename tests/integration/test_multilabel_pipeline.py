"""The DEFAULT pipeline on a multi-label manifest, stage by stage as ``dvc repro`` runs it.

A generated chest-X-ray-like manifest (3 findings, several or none per image, patients over 3
sites, 32 px) goes through every classification stage of the stage table
(:data:`medsec.stages.pipeline.STAGES`, in its order, each flow called as ``medsec stage
<name>`` calls it: ``params.yaml`` = the default preset, plus ``--set`` overrides that only
shrink budgets and point the dataset at the manifest). The default attack list (deepfool,
uap) and defense list (mahalanobis, smoothing) hold entries that need one class per image:
they are skipped with a record (warning line, ``medsec.skipped`` tag, ``not applicable`` rows
in the scorecards, a report row/note), and everything else runs. Real MLflow SQLite store.

Segmentation is left out: ``segmentation.data`` (default ``phantoms``) is its own data source
with masks, independent of ``dataset`` - a classification manifest does not change it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mlflow
from flows import resolve_flow
from medsec.config import load_config
from medsec.stages.pipeline import STAGES
from tests.unit.test_multilabel import multilabel_manifest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[2]

BUDGETS = [  # the default preset's lists stay; only sizes, epochs and steps shrink
    "dataset.image_size=32", "train.epochs=2", "train.batch_size=16", "train.lr=0.003",
    "train.num_threads=1",
    "attack.n_examples=16", "attack.batch_size=16", "attack.uap_fit_size=32",
    "attack.transfer.surrogate.epochs=1", "attack.mlflow_sample=2",
    "attack.image_scaling={enabled: true, source_size: 64, n_examples: 2, steps: 10}",
    "defense.eval={eps: 4/255, steps: 3, restarts: 1, square_queries: 10, max_examples: 16, "
    "steps_factor: 2}",
    "privacy.epochs=1", "privacy.audit.num_reference=2", "privacy.audit.num_shadow=1",
    "privacy.audit.extraction.budgets=[8,16]", "privacy.audit.extraction.epochs=1",
    "privacy.audit.inversion.steps=5",
    "federated.rounds=1", "federated.compare_centralized=false",
    "deepfake.max_eval=16", "deepfake.gan.epochs=1", "deepfake.unseen_gan.epochs=1",
    "deepfake.dataset.n_per_class=8", "deepfake.tamper.epochs=1", "deepfake.tamper.n_images=8",
    "deepfake.detector.epochs=1", "deepfake.detector.n_train=32", "deepfake.dp.epochs=1",
    "deepfake.dp.batch_size=32", "deepfake.canary.enabled=false",
]


def _distinct(root: Path, seed: int = 0, amount: float = 0.25) -> None:
    """Blend every generated image with its own random 8 x 8 block texture (``amount`` of the
    intensity) so that images of different patients are not near-duplicates under the
    validation's perceptual hash (as in real studies; the plain generator's all-findings
    images are); the findings stay the brightest regions (>= 0.71 vs <= 0.55)."""
    rng = np.random.default_rng(seed)
    for path in sorted((root / "img").glob("*.png")):
        image = np.asarray(Image.open(path), np.float64) / 255
        n = image.shape[0]
        texture = np.kron(rng.random((8, 8)), np.ones((n // 8, n // 8)))
        blended = (1 - amount) * image + amount * texture
        Image.fromarray(np.round(blended * 255).astype(np.uint8)).save(path)


def _stages() -> list[str]:
    """The DVC stages in table order, without segmentation (see the module docstring)."""
    return [s.name for s in STAGES if s.dvc and s.name != "segmentation"]


def test_default_pipeline_runs_on_a_multilabel_manifest(tmp_path, monkeypatch, tracking_uri,
                                                         caplog):
    raw = tmp_path / "raw"
    multilabel_manifest(raw, n_patients=36, per_patient=2, size=40)
    _distinct(raw)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # == the default preset
    monkeypatch.chdir(tmp_path)
    own = ["dataset.source=manifest", "dataset.name=own", "dataset.path=manifest.csv",
           "dataset.data_dir=raw", *BUDGETS]
    cfg = load_config("params.yaml", overrides=own)
    assert cfg.segmentation.data == "phantoms"  # segmentation keeps its own masked data
    names = [s.id for s in cfg.attack.attacks]
    assert "deepfool" in names and "uap" in names  # the default lists, not a tailored one
    assert {"mahalanobis", "smoothing"} <= {d.name for d in cfg.defense.defenses}

    assert _stages() == ["data", "validate", "train", "evaluate", "federated", "deepfake",
                         "defense", "privacy", "attack", "report"]
    out: dict[str, dict] = {}
    caplog.set_level(logging.WARNING, logger="medsec")
    for name in _stages():
        flow_fn = resolve_flow(next(s for s in STAGES if s.name == name).flow)
        out[name] = flow_fn(config="params.yaml", overrides=own)

    # the warning line of each skipped entry, logged by the medsec logger (the console handler
    # that prints it is Prefect's, bound to whatever stream was current when Prefect set up
    # logging, so the record is checked, not a captured file descriptor)
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "medsec" and r.levelname == "WARNING"]
    deepfool = (f"attack.attacks[{names.index('deepfool')}] deepfool: not applicable to "
                "multi-label data (deepfool needs one class per image)")
    assert f"{deepfool}; skipped" in warnings
    assert any(w.startswith("defense.defenses[4].name smoothing: not applicable")
               for w in warnings)

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_stage: dict[str, list] = {}
    for run in runs:
        by_stage.setdefault(run.data.tags["medsec.stage"], []).append(run)
    assert set(_stages()) <= set(by_stage)
    for run in runs:
        if run.data.tags["medsec.stage"] == "report":
            continue
        assert run.data.tags["medsec.data_source"] == "manifest", run.data.tags["medsec.stage"]
        assert run.data.params["dataset.image_size"] == "32", run.data.tags["medsec.stage"]

    # evaluate: macro AUC and one AUC per finding
    ev = by_stage["evaluate"][0].data.metrics
    assert {"test_auc", "test_auc_label_0", "test_auc_label_1", "test_auc_label_2"} <= set(ev)
    assert 0.0 <= ev["test_auc"] <= 1.0

    # attack: worst case over what ran; deepfool and uap recorded, never a number
    suite = next(r for r in by_stage["attack"] if r.data.tags["medsec.attack"] == "suite")
    assert suite.info.run_id == out["attack"]["run_id"]
    m = suite.data.metrics
    assert 0.0 <= m["worst_case_eps8_robust_acc"] <= m["clean_acc"]
    assert suite.data.tags["medsec.skipped"].split("; ") == [
        deepfool, f"attack.attacks[{names.index('uap')}] uap: not applicable to multi-label "
                  "data (uap needs one class per image)"]
    assert not [k for k in m if k.startswith(("deepfool", "uap"))]
    assert out["attack"]["status"]["deepfool"] == out["attack"]["status"]["uap"] == \
        "not applicable"
    card = json.loads((tmp_path / "reports" / "scorecards" / "attack.json").read_text())
    assert set(card["not_applicable"]) == {"deepfool", "uap"}

    # defense: mahalanobis and smoothing skipped, the three others scored
    assert out["defense"]["status"] == {
        "undefended": "ok", "fast_fgsm_at": "ok", "bit_depth": "ok", "jpeg": "ok",
        "mahalanobis": "not applicable", "smoothing": "not applicable"}
    for run in by_stage["defense"]:
        assert "mahalanobis: not applicable" in run.data.tags["medsec.skipped"]
    scored = json.loads((tmp_path / "reports" / "scorecards" / "defense.json").read_text())
    assert scored["smoothing"]["status"] == "not applicable" and "clean_acc" in scored["jpeg"]
    md = (tmp_path / "reports" / "defense" / "scorecard.md").read_text()
    assert "| mahalanobis | defense.defenses[3].name | not applicable" in md

    # privacy: the declared MIA with its interval
    recipe = [r for r in by_stage["privacy"] if r.data.tags.get("medsec.audit") == "recipe"]
    assert recipe
    for run in recipe:
        p = run.data.metrics
        assert p["mia_auc_ci_low"] <= p["mia_auc"] <= p["mia_auc_ci_high"]

    # federated and deepfake finished on the same data (tags checked above)
    assert out["deepfake"]["run_id"] and by_stage["federated"]

    # the report: a leaderboard row for the standard model; skipped defenses as rows of empty
    # cells with the reason; skipped attacks as a note
    headline = out["report"]["headline"]
    rows = headline.get("own", headline)
    assert any(label.endswith("/ standard") for label in rows), headline
    text = Path(out["report"]["markdown"]).read_text()
    assert "not applicable: smoothing" in text and "not applicable: mahalanobis" in text
    assert f"{deepfool.split(':')[0]} skipped, not applicable to multi-label data" in text
