"""Agreement metrics on small cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kia.gold import load_gold
from kia.score import axis_agreement, compare, gold_labeling, gwet_ac1, krippendorff_alpha_masi, pabak
from kia.taxonomy import load_taxonomy

F = frozenset


def test_hand_worked_axis() -> None:
    # Four papers on an axis with categories X, Y.
    reference = [F({"X"}), F({"X", "Y"}), F({"Y"}), F({"X"})]
    candidate = [F({"X"}), F({"X"}), F({"X", "Y"}), F({"X"})]
    result = axis_agreement(reference, candidate, ["X", "Y"])
    # Exact: papers 1 and 4 -> 2/4.
    assert result.exact_match == 0.5
    # Jaccard per paper: 1, 1/2, 1/2, 1 -> mean 0.75.
    assert result.jaccard == 0.75
    # Micro: TP = X@p1, X@p2, X@p4, Y@p3 = 4; FP = X@p3 = 1; FN = Y@p2 = 1 -> F1 = 2*4 / (2*4 + 1 + 1) = 0.8.
    assert result.micro_f1 == 0.8
    x, y = result.per_category["X"], result.per_category["Y"]
    # X: reference 3 positives, candidate 4; TP 3 -> P 0.75, R 1, F1 6/7.
    assert (x["precision"], x["recall"], x["f1"]) == (0.75, 1.0, round(6 / 7, 4))
    # Y: reference 2, candidate 1, TP 1 -> P 1, R 0.5, F1 2/3; macro = (6/7 + 2/3) / 2.
    assert (y["precision"], y["recall"]) == (1.0, 0.5)
    assert result.macro_f1 == round((6 / 7 + 2 / 3) / 2, 4)
    # X agreement 3/4 -> PABAK 0.5; kappa: po 0.75, pe = 0.75*1 + 0.25*0 = 0.75 -> 0.
    assert x["pabak"] == 0.5 and x["kappa"] == 0.0


def test_pabak_and_ac1_by_hand() -> None:
    reference = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    candidate = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    assert pabak(reference, candidate) == pytest.approx(0.8)
    # q = (0.9 + 1.0) / 2 = 0.95; pe = 2 * 0.95 * 0.05 = 0.095; AC1 = (0.9 - 0.095) / 0.905.
    assert gwet_ac1(reference, candidate) == pytest.approx((0.9 - 0.095) / 0.905)


def test_alpha_masi_perfect_and_disagreeing() -> None:
    same = [F({"A"}), F({"B"}), F({"A", "B"})]
    assert krippendorff_alpha_masi(same, same) == 1.0
    swapped = [F({"B"}), F({"A"}), F({"A"})]
    value = krippendorff_alpha_masi(same, swapped)
    assert value is not None and value < 0.2


def test_compare_names_missing_papers_on_both_sides() -> None:
    taxonomy = load_taxonomy()
    gold = gold_labeling(load_gold(None, taxonomy), ["MAISI", "2506.00633", "NotInGold"])
    assert "2506.00633" in gold and "Text-to-CT" not in gold and "MedGen3D" in gold
    candidate = {
        "MAISI": {"K": F({"K2"}), "I": F({"I2"}), "A": F({"A1"})},
        "2506.00633": {"K": F({"K1"}), "I": F({"I2"}), "A": F({"A1"})},
        "NotInGold": {"K": F({"K1"}), "I": F({"I2"}), "A": F({"A1"})},
    }
    result = compare(gold, candidate, taxonomy)
    assert result.n_papers == 2
    assert result.triple_exact_match == 0.5
    assert {"paper": "NotInGold", "missing_in": "gold"} in result.missing
    assert sum(1 for m in result.missing if m["missing_in"] == "proposals") == 24
    assert [d.paper_key for d in result.disagreements] == ["2506.00633"]
    assert result.disagreements[0].axes == {"I": (["I1", "I2"], ["I2"])}
    document = result.as_dict()
    assert set(document) >= {"n_papers", "triple_exact_match", "axes", "missing"}
    assert set(document["axes"]["K"]) >= {
        "exact_match",
        "jaccard",
        "micro_f1",
        "macro_f1",
        "alpha_masi",
        "per_category",
    }
    assert set(document["axes"]["K"]["per_category"]["K1"]) >= {"precision", "recall", "f1", "kappa", "pabak", "ac1"}


def test_empty_overlap_does_not_crash() -> None:
    taxonomy = load_taxonomy()
    result = compare({"a": {"K": F({"K1"}), "I": F({"I2"}), "A": F({"A1"})}}, {}, taxonomy)
    assert result.n_papers == 0 and result.axes == {} and result.missing == [{"paper": "a", "missing_in": "proposals"}]
