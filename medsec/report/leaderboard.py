"""Leaderboard rows (one per dataset x model x training recipe) and columns from run records.

Every cell names the run it came from; a cell without a value says why (never a silent zero).
Column definitions live in :data:`COLUMNS` and are printed in the report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from medsec.errors import DataError
from medsec.metrics.privacy import MIN_EXPECTED_FP
from medsec.report.records import CLASSIFIER_STAGES, RunRecord, recipe


@dataclass(frozen=True)
class Cell:
    """One table cell: ``value`` (or ``text``) with the ``run_id`` it came from and the
    ``source`` metric, an interval ``low``/``high`` where logged, or ``reason`` when empty."""

    value: float | None = None
    run_id: str | None = None
    source: str = ""
    low: float | None = None
    high: float | None = None
    text: str | None = None
    reason: str | None = None

    @property
    def empty(self) -> bool:
        return self.value is None and self.text is None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


Runs = dict[str, RunRecord]
"""The runs of one row by stage (the latest finished run of each stage)."""


@dataclass(frozen=True)
class Column:
    """A leaderboard column: ``get`` turns a row's runs into a :class:`Cell`."""

    key: str
    title: str
    definition: str
    get: Callable[[Runs], Cell]
    group: str = ""
    percent: bool = False


def _missing(runs: Runs, sources: list[tuple[str, str]]) -> Cell:
    stages = [s for s, _ in sources]
    logged = [s for s in stages if s in runs]
    if not logged:
        return Cell(reason=f"no {'/'.join(dict.fromkeys(stages))} run for this recipe")
    stage = logged[0]
    names = [m for s, m in sources if s == stage]
    return Cell(reason=f"{stage} run {runs[stage].run_id[:8]} did not log {names[0]}",
                run_id=runs[stage].run_id)


def metric(*sources: tuple[str, str], ci: bool = False) -> Callable[[Runs], Cell]:
    """The first ``(stage, metric)`` of ``sources`` the row's runs logged; with ``ci`` the
    interval ``<metric>_ci_low``/``_ci_high`` when logged."""

    def get(runs: Runs) -> Cell:
        for stage, name in sources:
            run = runs.get(stage)
            if run is None or run.metric(name) is None:
                continue
            low = run.metric(f"{name}_ci_low") if ci else None
            high = run.metric(f"{name}_ci_high") if ci else None
            return Cell(run.metric(name), run.run_id, f"{stage}:{name}", low, high)
        return _missing(runs, list(sources))

    return get


def _grey(eps: float) -> int:
    return int(round(eps * 255))


def robust_linf(k: int) -> Callable[[Runs], Cell]:
    """Robust accuracy at L-inf ``k``/255: the defense stage's per-example worst case over its
    adaptive white-box and black-box attacks when it evaluated at that budget, else the attack
    stage's per-example worst case over its suite (``worst_case_eps<k>_robust_acc``)."""

    def get(runs: Runs) -> Cell:
        defense = runs.get("defense")
        eps = defense.metric("epsilon") if defense is not None else None
        if eps is not None and _grey(eps) == k and defense.metric("robust_acc") is not None:
            return Cell(defense.metric("robust_acc"), defense.run_id, "defense:robust_acc")
        attack = runs.get("attack")
        name = f"worst_case_eps{k}_robust_acc"
        if attack is not None and attack.metric(name) is not None:
            return Cell(attack.metric(name), attack.run_id, f"attack:{name}")
        if attack is None and defense is None:
            return Cell(reason="no attack or defense run for this recipe")
        where = [f"{s} run {r.run_id[:8]}" for s, r in (("attack", attack), ("defense", defense))
                 if r is not None]
        return Cell(reason=f"not evaluated at {k}/255 ({', '.join(where)})")

    return get


L2_WORST_CASE = "worst_case_l2_eps128_robust_acc"
"""The attack stage's per-example worst case over its L2 attacks at 0.5 (0.5 * 255 = 128)."""


def robust_l2(runs: Runs) -> Cell:
    """Robust accuracy at L2 0.5: the attack stage's per-example worst case over every L2
    attack of its suite at 0.5 (:data:`L2_WORST_CASE`, like the L-inf columns); an empty cell
    with the reason when the run did not log it (never the best single attack)."""
    attack = runs.get("attack")
    if attack is None:
        return Cell(reason="no attack run for this recipe")
    value = attack.metric(L2_WORST_CASE)
    if value is None:
        return Cell(reason=f"attack run {attack.run_id[:8]} logged no {L2_WORST_CASE} (no L2 "
                           "attack at 0.5 in its suite, or a run before the L2 worst case)",
                    run_id=attack.run_id)
    return Cell(value, attack.run_id, f"attack:{L2_WORST_CASE}")


def mia_tpr(name: str, fpr: float) -> Callable[[Runs], Cell]:
    """Membership TPR at ``fpr`` (metric ``name``, Clopper-Pearson interval) of the privacy run.
    The audit leaves it unlogged (None) when ``mia_n_nonmembers * fpr`` < 10 expected false
    positives: the empty cell then says so, with the sample size, not "did not log"."""
    base = metric(("privacy", name), ci=True)

    def get(runs: Runs) -> Cell:
        cell = base(runs)
        run = runs.get("privacy")
        n_non = run.metric("mia_n_nonmembers") if run is not None else None
        if not cell.empty or n_non is None or n_non * fpr >= MIN_EXPECTED_FP:
            return cell
        return Cell(reason=f"unresolved: {n_non:.0f} non-members expect {n_non * fpr:.3g} false "
                           f"positives at FPR {fpr:g} (need >= {MIN_EXPECTED_FP:g}, i.e. >= "
                           f"{MIN_EXPECTED_FP / fpr:.0f} non-members; privacy run "
                           f"{run.run_id[:8]})", run_id=run.run_id)

    return get


def epsilon_claimed(runs: Runs) -> Cell:
    """The accountant's epsilon of a DP recipe; ``non-private`` for a recipe that trained
    without DP: a train/privacy/federated run tagged ``medsec.privacy=none``, or a defense-stage
    recipe (adversarial training, input transforms of the baseline) whose run has
    ``privacy.dp.enabled`` False. An empty cell (with the reason) only where it is unknown."""
    cell = metric(("privacy", "epsilon"), ("train", "epsilon"), ("federated", "epsilon"))(runs)
    if not cell.empty:
        return cell
    for stage in ("privacy", "train", "federated"):
        run = runs.get(stage)
        if run is not None and run.tag("privacy", "none") in ("none", ""):
            return Cell(text="non-private (∞)", run_id=run.run_id, source=f"{stage}:tag")
    defense = runs.get("defense")  # defense-stage recipes (PGD-AT, fast-AT, transforms, ...)
    if defense is not None:
        if defense.params.get("privacy.dp.enabled", "False") != "True":
            return Cell(text="non-private (∞)", run_id=defense.run_id,
                        source="defense:params privacy.dp.enabled")
        return Cell(reason=f"defense run {defense.run_id[:8]} trained with privacy.dp.enabled "
                           "but logged no epsilon", run_id=defense.run_id)
    return cell


def device(runs: Runs) -> Cell:
    """The device the recipe trained on: the tag ``medsec.device`` (with ``medsec.precision``
    when not 32-bit float) that every training run sets, e.g. ``cpu``, ``gpu (NVIDIA H200),
    bf16-mixed``; for runs from before the tag the configured ``train.accelerator`` x
    ``train.devices`` marked ``(configured)`` (``auto``: a GPU when torch saw one)."""
    stages = ("train", "privacy", "federated", "defense")
    for stage in stages:
        run = runs.get(stage)
        if run is not None and run.tag("device"):
            precision = run.tag("precision", "32")
            text = run.tag("device") + ("" if precision in ("", "32") else f", {precision}")
            return Cell(text=text, run_id=run.run_id, source=f"{stage}:tag")
    for stage in stages:
        run = runs.get(stage)
        if run is not None and run.params.get("train.accelerator"):
            text = f"{run.params['train.accelerator']} x{run.params.get('train.devices', '1')}"
            return Cell(text=text + " (configured)", run_id=run.run_id,
                        source=f"{stage}:params train.accelerator")
    return Cell(reason="no medsec.device tag or train.accelerator param on the training run")


LINF = (1, 2, 4, 8)
COLUMNS: tuple[Column, ...] = (
    Column("test_acc", "ACC", "Clean test accuracy (argmax). Defense-stage rows: on the "
           "defense evaluation subset.",
           metric(("evaluate", "test_acc"), ("privacy", "test_acc"), ("federated", "test_acc"),
                  ("defense", "clean_acc")), "utility", True),
    Column("test_auc", "AUC", "Test ROC AUC (binary: class 1; multi-class: macro one-vs-rest).",
           metric(("evaluate", "test_auc"), ("privacy", "test_auc"),
                  ("federated", "test_auc")), "utility"),
    Column("test_sensitivity", "Sens", "Test sensitivity (recall of the positive class) at "
           "the threshold chosen on the validation split (Youden's J).",
           metric(("evaluate", "test_sensitivity")), "utility", True),
    Column("test_specificity", "Spec", "Test specificity at the same validation-chosen "
           "threshold.", metric(("evaluate", "test_specificity")), "utility", True),
    *(Column(f"robust_linf_{k}", f"Rob L∞ {k}/255",
             f"Worst-case robust accuracy at L∞ {k}/255: the fraction of examples correct on "
             "the clean input AND under every attack of the ensemble (medsec.metrics."
             "robustness.robust_correct); BPDA/EOT for input transforms (defense stage).",
             robust_linf(k), "robustness", True) for k in LINF),
    Column("robust_l2_0.5", "Rob L2 0.5", "Worst-case robust accuracy at L2 0.5: correct on "
           "the clean input AND under every L2 attack of the attack stage's ensemble at 0.5, per "
           f"example ({L2_WORST_CASE}).", robust_l2, "robustness", True),
    Column("corruption_acc_mean", "Corr mean", "Accuracy under the MedMNIST-C corruptions of "
           "the modality, mean over corruptions x 5 severities.",
           metric(("evaluate", "corruption_acc_mean")), "robustness", True),
    Column("corruption_acc_worst", "Corr worst", "Lowest accuracy over the MedMNIST-C "
           "corruptions and severities.", metric(("evaluate", "corruption_acc_worst")),
           "robustness", True),
    Column("mia_auc", "MIA AUC", "Membership-inference AUC of the declared attack, with its "
           "bootstrap 95% interval (0.5 = no leakage).",
           metric(("privacy", "mia_auc"), ("federated", "mia_auc"), ci=True), "privacy"),
    Column("mia_tpr_at_0.1pct_fpr", "TPR@0.1%", "Membership TPR at 0.1% FPR, Clopper-Pearson "
           "95% interval.", mia_tpr("mia_tpr_at_0.1pct_fpr", 0.001), "privacy"),
    Column("mia_tpr_at_1pct_fpr", "TPR@1%", "Membership TPR at 1% FPR, Clopper-Pearson 95% "
           "interval.", mia_tpr("mia_tpr_at_1pct_fpr", 0.01), "privacy"),
    Column("epsilon", "ε claimed", "The accountant's (ε, δ)-DP epsilon of the training run; "
           "non-private (∞) for a recipe trained without DP (adversarial training and input "
           "transforms included).",
           epsilon_claimed, "privacy"),
    Column("epsilon_audit_lower", "ε audited ≥", "95% lower bound on epsilon from a one-run "
           "canary audit (Steinke et al. 2023).",
           metric(("privacy:canary", "epsilon_audit_lower"), ("privacy", "epsilon_audit_lower"),
                  ("train", "epsilon_audit_lower"), ("federated", "epsilon_audit_lower"),
                  ("federated", "client_dp_epsilon_audit_lower")),
           "privacy"),
    Column("train_seconds", "Train s", "Training wall-clock seconds (fit only).",
           metric(("train", "fit_seconds"), ("privacy", "fit_seconds"),
                  ("federated", "federation_seconds"), ("defense", "train_seconds")), "cost"),
    Column("device", "Device", "Device the model trained on (tag medsec.device: cpu, or gpu "
           "with its name; the precision when not 32-bit float). '(configured)': a run from "
           "before the tag, showing the configured train.accelerator.", device, "cost"),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
HEADLINE = ("test_acc", "robust_linf_4", "mia_auc", "epsilon")
"""Columns written to ``metrics/leaderboard.json`` per row (non-empty cells only, so that
``dvc metrics show`` stays short; the full tables are MLflow artifacts of the report run)."""


@dataclass
class Row:
    """One leaderboard row: ``cells`` by column key, ``warnings`` (attack-failure checks)."""

    dataset: str
    model: str
    recipe: str
    runs: Runs
    cells: dict[str, Cell] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.model} / {self.recipe}"


@dataclass
class Table:
    """A plain table (segmentation, DeepFakes): ``rows`` of (label, cells by column)."""

    title: str
    columns: list[tuple[str, str]]  # (key, title)
    rows: list[tuple[str, dict[str, Cell]]]
    definitions: dict[str, str] = field(default_factory=dict)


@dataclass
class Leaderboard:
    """The report of one dataset (at its latest data version)."""

    dataset: str
    data_version: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    segmentation: Table | None = None
    deepfake: Table | None = None

    def headline(self) -> dict[str, dict[str, float | None]]:
        """``{row label: {column: value}}`` for the non-empty :data:`HEADLINE` cells."""
        return {row.label: {k: row.cells[k].value for k in HEADLINE
                            if row.cells[k].value is not None} for row in self.rows}


def _warnings(row: Row) -> list[str]:
    """Attack-failure checks: gradient-masking flags logged by the attack/defense stages,
    black-box beating white-box, robust accuracy rising with epsilon."""
    out = []
    attack = row.runs.get("attack")
    if attack is not None:
        flags = attack.tags.get("medsec.gradient_masking", "none")
        if flags and flags != "none":
            out.append(f"attack stage gradient-masking flags: {flags} (run {attack.run_id[:8]})")
        for k in LINF:
            square = attack.metric(f"square_eps{k}_robust_acc")
            white = [v for m, v in attack.metrics.items() if m.endswith(f"_eps{k}_robust_acc")
                     and m.split("_eps")[0] in ("fgsm", "pgd", "apgd", "bim", "mim", "deepfool")]
            if square is not None and white and square < min(white) - 1e-9:
                out.append(f"black-box Square beats every white-box attack at {k}/255 "
                           f"({square:.3f} < {min(white):.3f}; run {attack.run_id[:8]})")
    defense = row.runs.get("defense")
    if defense is not None:
        raised = sorted(m[len("flag_"):] for m, v in defense.metrics.items()
                        if m.startswith("flag_") and v >= 0.5)
        if raised:
            out.append(f"defense stage flags: {', '.join(raised)} (run {defense.run_id[:8]})")
    curve = [(k, row.cells[f"robust_linf_{k}"].value) for k in LINF]
    values = [(k, v) for k, v in curve if v is not None]
    for (k1, v1), (k2, v2) in zip(values, values[1:], strict=False):
        if v2 > v1 + 1e-9:
            out.append(f"robust accuracy rises with epsilon ({k1}/255: {v1:.3f} -> "
                       f"{k2}/255: {v2:.3f})")
    return out


def _latest(records: Iterable[RunRecord]) -> list[RunRecord]:
    return sorted(records, key=lambda r: r.start_time, reverse=True)


def is_segmentation(record: RunRecord) -> bool:
    return record.tag("task") == "segmentation"


def build_rows(records: list[RunRecord]) -> list[Row]:
    """Rows from the classifier-stage runs of one dataset and data version: the latest run per
    (model, recipe, stage)."""
    grouped: dict[tuple[str, str], Runs] = {}
    for record in _latest(records):
        if record.stage not in CLASSIFIER_STAGES or is_segmentation(record):
            continue
        name = recipe(record)
        if name is None:
            continue
        stage = record.stage
        if record.tag("audit") == "canary":  # the one-run DP audit: its own child run
            stage = f"{stage}:canary"
        grouped.setdefault((record.model, name), {}).setdefault(stage, record)
    rows = []
    for (model, name), runs in grouped.items():
        row = Row(next(iter(runs.values())).dataset, model, name, runs)
        row.cells = {c.key: c.get(runs) for c in COLUMNS}
        row.warnings = _warnings(row)
        rows.append(row)
    rows += not_applicable_rows(records, {(r.model, r.recipe) for r in rows})
    order = {"standard": 0}
    return sorted(rows, key=lambda r: (r.model, order.get(r.recipe, 1), r.recipe))


_SKIPPED = re.compile(r"^(?P<field>\S+) (?P<entry>\S+): (?P<reason>not applicable .*)$")


def skipped_entries(record: RunRecord) -> list[tuple[str, str, str]]:
    """(field, entry, reason) of each configured entry the stage run skipped as not applicable
    to its data (tag ``medsec.skipped``, lines of :mod:`medsec.stages.applicability`)."""
    value = record.tag("skipped", "none")
    if value == "none":
        return []
    found = (_SKIPPED.match(line) for line in value.split("; "))
    return [(m["field"], m["entry"], m["reason"]) for m in found if m]


def not_applicable_rows(records: list[RunRecord], present: set[tuple[str, str]]) -> list[Row]:
    """One row per defense the latest defense stage skipped as not applicable to the data
    (e.g. smoothing on multi-label data): every cell empty, its reason the record's (never a
    number, never a silent drop); ``present``: (model, recipe) rows already built."""
    rows: dict[tuple[str, str], Row] = {}
    for record in _latest(records):
        if record.stage != "defense":
            continue
        for spec_field, entry, reason in skipped_entries(record):
            key = (record.model, f"not applicable: {entry}")
            if key in present or key in rows:
                continue
            why = f"{reason} ({spec_field}; defense run {record.run_id[:8]})"
            rows[key] = Row(record.dataset, record.model, key[1], {},
                            {c.key: Cell(reason=why) for c in COLUMNS})
    return list(rows.values())


def skipped_notes(records: list[RunRecord]) -> list[str]:
    """A note per attack the latest attack suite run of each model skipped as not applicable to
    the data (its robust-accuracy cells are the worst case over the attacks that ran)."""
    notes: dict[str, str] = {}
    for record in _latest(records):
        if record.stage != "attack" or record.tag("attack", "suite") != "suite":
            continue
        for spec_field, entry, reason in skipped_entries(record):
            notes.setdefault(f"{record.model}:{spec_field}", (
                f"attack stage ({record.model}, run {record.run_id[:8]}): {spec_field} {entry} "
                f"skipped, {reason}; the robust-accuracy cells are the worst case over the "
                "attacks that ran"))
    return list(notes.values())


def segmentation_table(records: list[RunRecord]) -> Table | None:
    """Lesion Dice of each segmentation model (clean) and under each attack (``dice_adv``),
    with the targeted attacks' success (erase / inject)."""
    seg = [r for r in _latest(records) if is_segmentation(r)]
    trains = {}
    for r in seg:
        if r.stage == "train":
            trains.setdefault((r.model, r.tag("defense", "none")), r)
    if not trains:
        return None
    attacks = sorted({r.tag("attack") for r in seg if r.stage == "attack"})
    columns = [("dice", "Dice clean")] + [(a, f"Dice {a}") for a in attacks] + \
        [(f"{a}:target", f"{a} success") for a in attacks if "erase" in a or "inject" in a]
    rows = []
    for (model, defense), train in trains.items():
        cells = {"dice": metric(("train", "test_dice"))({"train": train})}
        mine = {r.tag("attack"): r for r in seg if r.stage == "attack"
                and r.tag("source_run_id") == train.run_id}
        for a in attacks:
            run = mine.get(a)
            cells[a] = (metric(("attack", "dice_adv"))({"attack": run}) if run
                        else Cell(reason=f"no {a} run against this model"))
            if "erase" in a or "inject" in a:
                cells[f"{a}:target"] = (metric(("attack", "target_success_rate"))(
                    {"attack": run}) if run else Cell(reason=f"no {a} run against this model"))
        rows.append((f"{model} / {'standard' if defense == 'none' else defense}", cells))
    return Table("Segmentation: lesion Dice", columns, rows, {
        "dice": "Mean lesion Dice on the clean test images.",
        "attacks": "Dice under each attack (dice_adv); erase/inject success: fraction of "
                   "images where the targeted attack reached its goal (target_success_rate)."})


_DF = (("detector_auc_seen", "Detector AUROC (seen GAN)"),
       ("detector_auc_unseen", "Detector AUROC (unseen GAN)"),
       ("tamper_flip_rate", "Tamper flip rate"), ("fd_classifier", "Fréchet distance"),
       ("tstr_acc", "TSTR ACC"), ("gen_mia_auc", "Generator MIA AUC"), ("epsilon", "ε"),
       ("epsilon_audit_lower", "ε audited ≥"))


def deepfake_table(records: list[RunRecord]) -> Table | None:
    """DeepFake detection/tampering of the latest deepfake run; DP-GAN variants (metrics
    ``dp_eps<k>_*``) as extra rows."""
    runs = [r for r in _latest(records) if r.stage == "deepfake" and r.tag("audit") != "canary"]
    if not runs:
        return None
    run = runs[0]
    prefixes = sorted({m.split("_")[1] for m in run.metrics if re.match(r"dp_eps\d+_", m)})
    rows = []
    for prefix in ["", *(f"dp_{p}_" for p in prefixes)]:
        cells = {}
        for key, _ in _DF:
            name = prefix + key
            if prefix and key.startswith(("detector", "tamper")):
                cells[key] = Cell(reason="detector/tamper are scored on the non-private GAN only")
            elif not prefix and key == "epsilon":
                cells[key] = Cell(text="non-private (∞)", run_id=run.run_id)
            elif not prefix and key == "epsilon_audit_lower":
                cells[key] = Cell(reason="the non-private GAN is not canary-audited")
            else:
                cells[key] = metric(("deepfake", name))({"deepfake": run})
        rows.append((f"GAN{' DP ' + prefix[3:-1] if prefix else ''}", cells))
    return Table("DeepFakes", list(_DF), rows, {
        "detector_auc_seen": "AUROC of the real-vs-fake detector on fakes of the GAN it saw.",
        "detector_auc_unseen": "Same on an unseen GAN (generalisation).",
        "tamper_flip_rate": "Fraction of tampered images whose diagnosis flips.",
        "fd_classifier": "Fréchet distance between real and fake features of the classifier.",
        "tstr_acc": "Train-on-synthetic, test-on-real accuracy.",
        "gen_mia_auc": "Membership inference against the generator."})


def build(records: list[RunRecord], dataset: str | None = None) -> list[Leaderboard]:
    """One :class:`Leaderboard` per dataset (only ``dataset`` when given). Runs on older data
    versions of a dataset are left out (named in the notes). DataError (one line) when no run
    matches."""
    records = [r for r in records if r.stage and r.stage not in ("report", "pipeline")]
    if dataset is not None:
        records = [r for r in records if r.dataset == dataset]
    if not records:
        where = f" for dataset {dataset!r}" if dataset else ""
        raise DataError(f"no MedSec runs{where} in the tracking store (run the pipeline first)")
    boards = []
    for name in sorted({r.dataset for r in records}):
        mine = _latest(r for r in records if r.dataset == name)
        notes: list[str] = []
        current: list[RunRecord] = []
        version = "unknown"
        for family in (False, True):  # classifier stages, then segmentation (own data)
            runs = [r for r in mine if is_segmentation(r) == family]
            if not runs:
                continue
            latest = runs[0].data_version
            version = version if family else latest
            current += [r for r in runs if r.data_version == latest]
            old = sum(r.data_version != latest for r in runs)
            if old:
                notes.append(f"{old} {'segmentation ' if family else ''}run(s) on other data "
                             f"versions of {name} left out (this report: data version "
                             f"{latest[:12]})")
        notes += skipped_notes(current)
        board = Leaderboard(name, version, build_rows(current), notes,
                            segmentation_table(current), deepfake_table(current))
        if not board.rows and board.segmentation is None and board.deepfake is None:
            notes.append("no classifier, segmentation or deepfake runs (only data/validation)")
        boards.append(board)
    return boards
