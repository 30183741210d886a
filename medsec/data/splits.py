"""Patient-level splits: grouped, stratified, seeded; never by image.

Every image of a patient lands in the same split. Patients are stratified by their label
(the most frequent label of their images) with scikit-learn's ``StratifiedGroupKFold``; when a
class has too few patients for stratification, ``GroupShuffleSplit`` (grouped, not
stratified) is used. Images whose split is fixed (a manifest's ``split`` column) keep it, and a
patient with any fixed image sends their unassigned images to that split; the fixed splits are
taken as given (a manifest that puts one patient in two splits is reported by validation).
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

from medsec.data.types import SPLITS
from medsec.errors import DataError


def _fold_out(groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int
              ) -> np.ndarray:
    """Boolean mask of the images whose patients form one held-out fold of about
    ``fraction`` of the patients (stratified by label when every class has enough patients)."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    n_splits = max(2, int(round(1.0 / fraction)))
    per_class = Counter(labels[np.unique(groups, return_index=True)[1]].tolist())
    if n_groups >= n_splits and min(per_class.values()) >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    else:
        n_test = max(1, int(round(fraction * n_groups)))
        splitter = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
        _, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    return mask


def patient_splits(patients: list[str], labels: list[int], fixed: list[str | None],
                   val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """The split (``train``/``val``/``test``) of every image.

    ``patients``: one (pseudonymous) patient key per image; ``labels``: an int label per image
    (the stratification target); ``fixed``: a split per image or None (to assign);
    fractions are of the patients to assign, in (0, 0.5). Raises DataError when there are
    fewer than 3 patients to share between the three splits.
    """
    n = len(patients)
    out: list[str | None] = list(fixed)
    pinned: dict[str, str] = {}
    for patient, split in zip(patients, fixed, strict=True):
        if split is not None:
            pinned.setdefault(patient, split)
    for i, patient in enumerate(patients):
        if out[i] is None and patient in pinned:
            out[i] = pinned[patient]
    todo = np.asarray([i for i in range(n) if out[i] is None], np.int64)
    if len(todo):
        groups = np.asarray([patients[i] for i in todo])
        # the patient's majority label is its stratum (all of its images share it)
        counts: dict[str, Counter[int]] = {}
        for i in todo:
            counts.setdefault(patients[i], Counter())[labels[i]] += 1
        strata = np.asarray([counts[patients[i]].most_common(1)[0][0] for i in todo])
        n_patients = len(counts)
        if n_patients < 3 and not pinned:
            raise DataError(f"only {n_patients} patient(s): a patient-level split into train, "
                            "val and test needs at least 3 (add patients or a manifest split "
                            "column)")
        test = _fold_out(groups, strata, test_fraction, seed)
        rest = ~test
        val = np.zeros(len(todo), bool)
        if len(np.unique(groups[rest])) >= 2:
            # val is val_fraction of ALL assigned patients: rescale to the remaining ones
            share = min(0.5, val_fraction / (1.0 - test_fraction))
            val[rest] = _fold_out(groups[rest], strata[rest], share, seed + 1)
        for index, is_test, is_val in zip(todo, test, val, strict=True):
            out[int(index)] = "test" if is_test else "val" if is_val else "train"
    return [str(s) for s in out]


def split_counts(assigned: list[str], patients: list[str]) -> dict[str, dict[str, int]]:
    """Per split: images and distinct patients."""
    return {split: {"images": sum(s == split for s in assigned),
                    "patients": len({p for s, p in zip(assigned, patients, strict=True)
                                     if s == split})} for split in SPLITS}
