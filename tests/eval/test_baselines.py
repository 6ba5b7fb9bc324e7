import pytest

from lmlab.eval import copy_baseline, lead_baseline, majority_baseline, majority_label


def test_copy_baseline():
    sources = ["Das ist gut.", "Hallo Welt"]
    assert copy_baseline(sources) == sources
    assert copy_baseline(sources) is not sources


def test_lead_baseline():
    article = "Dr. Smith visited Paris on Monday. She met J. Doe there. They talked for hours."
    assert lead_baseline([article]) == ["Dr. Smith visited Paris on Monday."]
    assert lead_baseline([article], n_sentences=2) == ["Dr. Smith visited Paris on Monday.\nShe met J. Doe there."]
    assert lead_baseline(["One sentence only"], n_sentences=3) == ["One sentence only"]
    assert lead_baseline(["First line\nsecond line", "", "他来了。我走了。"]) == ["First line", "", "他来了。"]
    with pytest.raises(ValueError):
        lead_baseline([article], n_sentences=0)


def test_majority_baseline_breaks_ties_by_sort_order():
    assert majority_baseline(["b", "a", "b", "c"], 3) == ["b", "b", "b"]
    # "neg" and "pos" tie: the smaller in sort order, whatever the order of the data
    assert majority_label(["pos", "neg", "pos", "neg"]) == "neg"
    assert majority_label(["neg", "pos", "neg", "pos"]) == "neg"
    assert majority_baseline([2, 1, 2, 1, 0], 2) == [1, 1]
    assert majority_baseline(["x"], 0) == []
    with pytest.raises(ValueError):
        majority_label([])
