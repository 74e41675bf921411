"""Calibrated linear models: a standardised, L2-regularised logistic regression whose strength is
chosen by inner cross-validation, Platt-calibrated on out-of-fold scores, stored as plain lists.

Why a module of its own: the paper-level head (`kia.learned`) and the sentence-support models
(`kia.support`) fit the same kind of model; both import it from here, so neither imports the other.
`settings` is any object with `c_grid`, `inner_folds` and `seed` (`kia.learned.HeadSettings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0))))


@dataclass
class LinearModel:
    """A standardised, L2-regularised logistic regression plus a Platt map of its score to a
    calibrated probability. Stored as plain lists so a head is a small JSON file."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    platt_a: float
    platt_b: float
    c: float
    positives: int
    n: int

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (what `dataclasses.asdict` gives, without its deep copy of
        every float: a head's run identity serialises some forty thousand of them)."""
        return {name: list(value) if isinstance(value, list) else value for name, value in vars(self).items()}

    def score(self, x: np.ndarray) -> np.ndarray:
        """The uncalibrated decision value."""
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.asarray(z @ np.asarray(self.coef) + self.intercept)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probability of the positive class."""
        return _sigmoid(self.platt_a * self.score(x) + self.platt_b)

    def direction(self) -> np.ndarray:
        """Weights in the raw feature space (per unit of each input), for evidence attribution."""
        return np.asarray(self.coef) / np.asarray(self.scale)


def _block_scale(blocks: Sequence[int]) -> np.ndarray:
    """Each block of columns scaled by 1/sqrt(its width), so a 768-wide embedding block and an
    8-wide evidence block weigh alike under one L2 penalty."""
    return np.concatenate([np.full(b, 1.0 / np.sqrt(b)) for b in blocks if b > 0])


def _folds(
    y: np.ndarray, wanted: int, seed: int, together: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds; rows with the same `together` id (views of one paper, which share its
    labels) fall in the same fold, so no view is scored by a model that saw another view of it."""
    from sklearn.model_selection import StratifiedKFold

    if together is None:
        together = np.arange(len(y))
    first = np.unique(together, return_index=True)[1]
    first.sort()
    y_first = y[first]
    n_splits = int(min(wanted, int(y_first.sum()), int(len(y_first) - y_first.sum())))
    if n_splits < 2:
        return []
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = []
    for _train, test in splitter.split(np.zeros(len(first)), y_first):
        held = np.isin(together, together[first[test]])
        folds.append((np.flatnonzero(~held), np.flatnonzero(held)))
    return folds


def _raw_fit(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    return model.fit(x, y)


def _platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """A 1-D logistic fit of out-of-fold scores to outcomes, with Platt's smoothed targets (so a
    perfectly separated fold does not give infinite confidence)."""
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    targets = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    for _ in range(100):  # Newton steps on the cross-entropy with soft targets
        p = _sigmoid(a * scores + b)
        g = np.asarray([np.sum((p - targets) * scores), np.sum(p - targets)])
        wgt = p * (1 - p) + 1e-9
        h = np.asarray(
            [[np.sum(wgt * scores * scores) + 1e-6, np.sum(wgt * scores)], [np.sum(wgt * scores), np.sum(wgt) + 1e-6]]
        )
        step = np.linalg.solve(h, g)
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-8:
            break
    return max(a, 0.0), b


def fit_linear(
    x: np.ndarray, y: np.ndarray, blocks: Sequence[int], settings: Any, groups: np.ndarray | None = None
) -> LinearModel:
    """Choose C by inner stratified CV (ranking quality, ties to the stronger penalty), calibrate
    on the out-of-fold scores of that C, refit on everything.

    Only the papers given are used: in a benchmark these are the training folds, never the paper
    being scored. `groups` (a paper id per row) keeps rows of one paper in one fold.
    """
    return fit_linear_oof(x, y, blocks, settings, groups)[0]


def fit_linear_oof(
    x: np.ndarray,
    y: np.ndarray,
    blocks: Sequence[int],
    settings: Any,
    groups: np.ndarray | None = None,
    together: np.ndarray | None = None,
) -> tuple[LinearModel, np.ndarray | None]:
    """`fit_linear`, plus the calibrated out-of-fold probability of every row (None when no inner
    CV was possible): what decision thresholds are chosen on, so they are never chosen on rows
    the model saw. `groups`: unstratified group folds (the shared model's rows of one paper);
    `together`: stratified folds that keep rows of one paper together (a paper and its views)."""
    from sklearn.metrics import roc_auc_score

    y = y.astype(int)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale < 1e-6, 1.0, scale) / _block_scale(blocks)
    z = (x - mean) / scale
    if groups is None:
        folds = _folds(y, settings.inner_folds, settings.seed, together)
    else:
        from sklearn.model_selection import GroupKFold

        folds = list(GroupKFold(n_splits=settings.inner_folds).split(z, y, groups))
    best_c, best_auc, best_oof = settings.c_grid[0], -1.0, None
    for c in settings.c_grid:
        oof = np.zeros(len(y))
        usable = bool(folds)
        for train, test in folds:
            if len(set(y[train])) < 2:
                usable = False
                break
            oof[test] = _raw_fit(z[train], y[train], c, settings.seed).decision_function(z[test])
        if not usable:
            continue
        auc = float(roc_auc_score(y, oof)) if len(set(y)) > 1 else 0.5
        if auc > best_auc + 1e-9:
            best_c, best_auc, best_oof = c, auc, oof
    model = _raw_fit(z, y, best_c, settings.seed)
    a, b = _platt(best_oof, y) if best_oof is not None else (1.0, 0.0)
    oof_p = _sigmoid(a * best_oof + b) if best_oof is not None else None
    return LinearModel(
        mean=[float(v) for v in mean],
        scale=[float(v) for v in scale],
        coef=[float(v) for v in model.coef_[0]],
        intercept=float(model.intercept_[0]),
        platt_a=a,
        platt_b=b,
        c=float(best_c),
        positives=int(y.sum()),
        n=len(y),
    ), oof_p
