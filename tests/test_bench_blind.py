"""The blind-reading benchmark's scoring (eval/bench_blind.py): verdicts counted per source and,
for a head's quotes, per right/wrong label and silver/other quote; a bad verdict is one clear line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "eval"))

from bench_blind import main, tally  # noqa: E402

KEY = [
    {"id": 1, "source": "kia", "key": "p", "category": "K1", "sentence": 0, "correct": True, "silver": True},
    {"id": 2, "source": "kia", "key": "p", "category": "K2", "sentence": 3, "correct": False, "silver": False},
    {"id": 3, "source": "silver", "key": "q", "category": "A1", "sentence": 1},
    {"id": 4, "source": "other", "key": "q", "category": "A1", "sentence": 2},
]


def test_tally_counts_each_source_and_splits_a_heads_quotes() -> None:
    counts = tally(KEY, {1: "supports", 2: "not", 3: "partly", 4: "not"})
    assert counts["kia"] == {"supports": 1, "not": 1}
    assert counts["kia, label right, quote silver"] == {"supports": 1}
    assert counts["kia, label wrong, quote not silver"] == {"not": 1}
    assert counts["silver"] == {"partly": 1} and counts["other"] == {"not": 1}
    assert "silver, label right, quote silver" not in counts  # controls carry no label verdict


def _run(tmp_path: Path, lines: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key.json").write_text(json.dumps(KEY), encoding="utf-8")
    (tmp_path / "judgements.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["bench_blind.py", "score", "--out", str(tmp_path)])
    main()


def test_score_prints_the_table_and_says_how_many_items_lack_a_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(tmp_path, [{"id": 1, "verdict": "supports"}, {"id": 2, "verdict": "partly"}], monkeypatch)
    out = capsys.readouterr().out
    assert "| kia | 2 | 1 | 1 | 0 | 1.00 |" in out
    assert "(2 items without a verdict)" in out


def test_score_refuses_an_unknown_verdict_naming_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match=r"judgements.jsonl:2: verdict must be one of"):
        _run(tmp_path, [{"id": 1, "verdict": "supports"}, {"id": 2, "verdict": "yes"}], monkeypatch)


def test_paired_outcomes_compare_the_two_heads_quotes_label_by_label(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench_blind import paired_items, paired_outcomes

    kia = [
        {"source": "kia", "key": "p", "category": "K1", "sentence": 0, "correct": True, "silver": True},
        {"source": "kia", "key": "p", "category": "K2", "sentence": 4, "correct": True, "silver": False},
        {"source": "kia", "key": "q", "category": "A1", "sentence": 1, "correct": True, "silver": False},
    ]
    other = [
        {"source": "last-layer", "key": "p", "category": "K1", "sentence": 2, "correct": True, "silver": False},
        {"source": "last-layer", "key": "p", "category": "K2", "sentence": 4, "correct": True, "silver": False},
    ]
    items = paired_items({"kia": kia, "former": other})
    assert [(i["source"], i["category"]) for i in items] == [
        ("kia", "K1"),
        ("last-layer", "K1"),
    ]  # same quote: left out
    key = [{"id": n, **item} for n, item in enumerate(items, 1)]
    assert paired_outcomes(key, {1: "supports", 2: "not"}) == (1, 0, 0)
    assert paired_outcomes(key, {1: "partly", 2: "partly"}) == (0, 0, 1)
    assert paired_outcomes(key, {1: "partly"}) == (0, 0, 0)  # one side unjudged: no pair
    (tmp_path / "key.json").write_text(json.dumps(key), encoding="utf-8")
    (tmp_path / "judgements.jsonl").write_text('{"id": 1, "verdict": "not"}\n{"id": 2, "verdict": "supports"}\n')
    monkeypatch.setattr(sys, "argv", ["bench_blind.py", "score", "--out", str(tmp_path)])
    main()
    assert "kia's better 0, worse 1, the same 0" in capsys.readouterr().out
