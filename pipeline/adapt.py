"""Adapting the offline head to a person's reviews without forgetting what it knew.

Why a blend: a refit on the papers a person reviewed sees tens of papers where the shipped head saw
55 (and a first review session sees 5 to 10). Measured on the devset (a head fitted on the corpus and
half the devset, the other half reviewed; eval/README.md, "Adapting to reviews"), replacing that head
by the refit made the unreviewed papers' K axis exact on 37% of papers instead of 67% after 10
reviews. So the adapted head keeps the head it started from (its `prior`) and blends the two heads'
probabilities per axis, `w * prior + (1 - w) * refit`. The weight is chosen on the reviews
themselves: the prior's probabilities on the reviewed papers (it never saw them) and the refit's out
of fold (`folds` refits, each on the other reviewed papers), the weight of least log loss on a grid,
ties to the prior. A person whose papers the prior knows well keeps the prior; one whose papers it
misreads moves to their own reviews as fast as those reviews show it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kia.learned import Head, Labeling, PaperFeatures, apply_support, refit, supported_probabilities
from kia.support import SupportModel
from kia.taxonomy import Taxonomy

# The blend weights tried, prior first: on a tie the head a person started from wins.
WEIGHT_GRID = tuple(round(1.0 - i / 10, 1) for i in range(11))
# Out-of-fold refits used to weigh the reviews; each trains on the other folds' papers.
FOLDS = 3
# Fewer reviewed papers than this leave every fold's training set too small to refit (a refit's
# inner cross-validation needs 3 papers): the prior alone is used.
MIN_PAPERS = 5


def root_prior(head: Head | None) -> Head | None:
    """The head an adapted head started from (adapting twice blends with the shipped head, not with
    an earlier adaptation of it)."""
    while head is not None and head.prior is not None:
        head = head.prior
    return head


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-4, 1.0 - 1e-4)
    return float(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)).mean())


def prior_weights(
    prior: Head, features: PaperFeatures, reviewed: Labeling, taxonomy: Taxonomy, folds: int = FOLDS
) -> dict[str, float]:
    """Per axis, the weight of `prior` in the blend: least log loss on the reviewed papers of
    `features` decided on that axis, the refit's probabilities out of fold. 1.0 (the prior alone)
    where too few papers are reviewed to refit in folds, and on an axis fewer than `MIN_PAPERS` of
    them decide."""
    rows = [i for i, k in enumerate(features.keys) if k in reviewed]
    weights = {axis.id: 1.0 for axis in taxonomy.axes}
    if len(rows) < MIN_PAPERS:
        return weights
    sub = features.subset(rows)
    keys = sub.keys
    prior_p = supported_probabilities(prior, sub, taxonomy)[1]
    refit_p = np.zeros_like(prior_p)
    for fold in range(folds):
        held = list(range(fold, len(keys), folds))
        kept = [i for i in range(len(keys)) if i % folds != fold]
        head = refit(sub.subset(kept), {keys[i]: reviewed[keys[i]] for i in kept}, taxonomy, base=prior)
        refit_p[held] = supported_probabilities(head, sub.subset(held), taxonomy)[1]
    columns = {axis.id: [sub.category_ids.index(c.id) for c in axis.categories] for axis in taxonomy.axes}
    for axis_id, cols in columns.items():
        decided = [i for i, k in enumerate(keys) if axis_id in reviewed[k]]
        if len(decided) < MIN_PAPERS:
            # Reviewed one axis at a time, an axis may have 1-2 decided papers: a weight chosen on
            # them threw that axis to a refit that barely knows it (the worst axis fell to 0.05).
            continue
        truth = [set(reviewed[keys[i]][axis_id]) for i in decided]
        y = np.asarray([[sub.category_ids[c] in t for c in cols] for t in truth], dtype=float)
        p0, p1 = prior_p[np.ix_(decided, cols)], refit_p[np.ix_(decided, cols)]
        losses = [_log_loss(w * p0 + (1.0 - w) * p1, y) for w in WEIGHT_GRID]
        weights[axis_id] = WEIGHT_GRID[int(np.argmin(losses))]
    return weights


def adapt_head(
    features: PaperFeatures,
    reviewed: Labeling,
    taxonomy: Taxonomy,
    prior: Head | None,
    in_scope: Mapping[str, bool] | None = None,
    zero_shot_support: SupportModel | None = None,
) -> Head:
    """The head refitted on the reviewed papers of `features`, blended with `prior` (its root, when
    `prior` is itself adapted) by `prior_weights`. Without a prior (zero-shot: another taxonomy) the
    refit alone, as before: zero-shot scores are relative, not probabilities to blend with. That
    refit keeps `zero_shot_support`, the sentence support the zero-shot start quoted with
    (`kia.learned.generic_support` of the shipped head), so its labels and quotes stay evidence
    first: reviews carry no evidence sentences to fit support of its own on."""
    prior = root_prior(prior)
    if prior is not None and prior.settings.support:
        features = apply_support(prior.support, features)  # once: the refits below keep the prior's support
    support = zero_shot_support if prior is None else None
    head = refit(features, reviewed, taxonomy, base=prior, in_scope=in_scope, support=support)
    if prior is None:
        return head
    head.prior = prior
    head.prior_weight = prior_weights(prior, features, reviewed, taxonomy)
    head.provenance = {**head.provenance, "prior_weight": dict(head.prior_weight)}
    return head
