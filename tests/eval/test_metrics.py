import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from lmlab.errors import ConfigError
from lmlab.eval import (
    METRICS,
    UnicodeTokenizer,
    accuracy,
    bleu,
    chrf,
    compute,
    higher_is_better,
    macro_f1,
    per_class_f1,
    rouge,
    rouge_tokenizer,
    split_sentences,
)

# One sentence per line, or newline-separated sentences: split_sentences leaves them as they are, so a direct
# rouge-score call on the same strings is the reference.
PREDS = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog.",
         "He was running to the station\nand missed the train."]
REFS = ["The cat is sitting on the mat.", "The quick brown fox jumped over the lazy dog.",
        "He ran to the station\nbut missed his train."]
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def direct_rouge(preds, refs, tokenizer=None):
    scorer = RougeScorer(ROUGE_TYPES, use_stemmer=True, tokenizer=tokenizer)
    per_example = [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]
    return {t: 100 * sum(s[t].fmeasure for s in per_example) / len(preds) for t in ROUGE_TYPES}


def test_bleu_and_chrf_equal_sacrebleu():
    ref_bleu = sacrebleu.metrics.BLEU()
    expected = ref_bleu.corpus_score(PREDS, [REFS])
    got = bleu(PREDS, REFS)
    assert got["bleu"] == pytest.approx(expected.score, abs=1e-12)
    assert got["bleu_signature"] == str(ref_bleu.get_signature())
    assert "tok:13a" in got["bleu_signature"] and "nrefs:1" in got["bleu_signature"]
    ref_chrf = sacrebleu.metrics.CHRF()
    got = chrf(PREDS, REFS)
    assert got["chrf"] == pytest.approx(ref_chrf.corpus_score(PREDS, [REFS]).score, abs=1e-12)
    assert got["chrf_signature"] == str(ref_chrf.get_signature())
    assert 0 < got["chrf"] < 100


def test_several_references_per_example():
    second = ["A cat sat on a mat.", "A fast brown fox leaps over a lazy dog.", "He missed the train."]
    refs = [[a, b] for a, b in zip(REFS, second, strict=True)]
    streams = [REFS, second]  # sacrebleu's layout: one list per reference slot
    assert bleu(PREDS, refs)["bleu"] == pytest.approx(sacrebleu.metrics.BLEU().corpus_score(PREDS, streams).score)
    assert chrf(PREDS, refs)["chrf"] == pytest.approx(sacrebleu.metrics.CHRF().corpus_score(PREDS, streams).score)
    scorer = RougeScorer(ROUGE_TYPES, use_stemmer=True)
    best = [scorer.score_multi(r, p) for p, r in zip(PREDS, refs, strict=True)]
    got = rouge(PREDS, refs)
    for t in ROUGE_TYPES:
        assert got[t] == pytest.approx(100 * sum(s[t].fmeasure for s in best) / 3)
    # a variable number of references: sacrebleu's None padding
    ragged = [[REFS[0], second[0]], [REFS[1]], [REFS[2], second[2]]]
    expected = sacrebleu.metrics.BLEU().corpus_score(PREDS, [REFS, [second[0], None, second[2]]]).score
    assert bleu(PREDS, ragged)["bleu"] == pytest.approx(expected)


def test_rouge_equals_rouge_score():
    got = rouge(PREDS, REFS)
    expected = direct_rouge(PREDS, REFS)
    assert got == pytest.approx(expected)
    assert 0 < got["rouge2"] < got["rouge1"] < 100


def test_identical_and_disjoint_by_hand():
    same = compute(["bleu", "chrf", *ROUGE_TYPES], PREDS, PREDS)
    for name in ["bleu", "chrf", *ROUGE_TYPES]:
        assert same[name] == pytest.approx(100.0)
    apart = compute(["bleu", "chrf", *ROUGE_TYPES], ["aaa bbb ccc ddd eee"], ["xxx yyy zzz www vvv"])
    for name in ["bleu", "chrf", *ROUGE_TYPES]:
        assert apart[name] == 0.0


def test_rouge_unigram_by_hand():
    # "the cat sat" vs "the cat sat down": 3 shared unigrams, P = 3/3, R = 3/4, F = 2*3/(3+4) = 6/7
    assert rouge(["the cat sat"], ["the cat sat down"])["rouge1"] == pytest.approx(600 / 7)


def test_rougelsum_splits_one_line_texts_into_sentences():
    pred = "The fox ran away. A dog barked loudly."
    ref = "A dog barked loudly. The fox ran away."
    got = rouge([pred], [ref])
    expected = direct_rouge(["The fox ran away.\nA dog barked loudly."], ["A dog barked loudly.\nThe fox ran away."])
    assert got == pytest.approx(expected)
    # summary-level LCS matches each sentence in full; plain LCS over the whole text cannot.
    assert got["rougeLsum"] == pytest.approx(100.0)
    assert got["rougeL"] < 100.0


def test_chinese_rouge_uses_characters():
    pred, ref = "我喜欢吃苹果", "我不喜欢吃香蕉"
    assert direct_rouge([pred], [ref])["rouge1"] == 0.0  # rouge-score's own tokenizer drops every Han character
    got = rouge([pred], [ref])
    assert got == pytest.approx(direct_rouge([pred], [ref], tokenizer=UnicodeTokenizer()))
    # characters: 6 predicted, 7 reference, 4 shared (我 喜 欢 吃): F = 2*4/(6+7)
    assert got["rouge1"] == pytest.approx(800 / 13)
    # bigrams: 5 predicted, 6 reference, 2 shared (喜欢, 欢吃): F = 2*2/(5+6)
    assert got["rouge2"] == pytest.approx(400 / 11)


def test_cyrillic_rouge_keeps_words():
    pred, ref = "Кошка сидит на ковре.", "Кошка сидела на ковре."
    assert direct_rouge([pred], [ref])["rouge1"] == 0.0
    got = rouge([pred], [ref])
    assert got == pytest.approx(direct_rouge([pred], [ref], tokenizer=UnicodeTokenizer()))
    assert got["rouge1"] == pytest.approx(75.0)  # 3 of 4 words on each side


def test_rouge_tokenizer_choice():
    assert UnicodeTokenizer().tokenize("Привет, мир! 我来了。Hello-world 42") == \
        ["привет", "мир", "我", "来", "了", "hello", "world", "42"]
    assert rouge_tokenizer(REFS) is None
    assert isinstance(rouge_tokenizer(["Кошка сидит"]), UnicodeTokenizer)
    assert rouge_tokenizer(["Кошка сидит"], lang="en") is None
    assert isinstance(rouge_tokenizer(REFS, lang="fr"), UnicodeTokenizer)
    # stemming applies with rouge-score's own tokenizer: "running" and "runs" both stem to "run"
    assert rouge(["running"], ["runs"])["rouge1"] == 100.0
    assert rouge(["running"], ["runs"], stem=False)["rouge1"] == 0.0


def test_bleu_tokenizer_for_the_target_language():
    zh_pred, zh_ref = ["我喜欢吃苹果。"], ["我喜欢吃香蕉。"]
    got = bleu(zh_pred, zh_ref)  # detected from the references' script
    assert "tok:zh" in got["bleu_signature"]
    assert got["bleu"] == pytest.approx(sacrebleu.metrics.BLEU(tokenize="zh").corpus_score(zh_pred, [zh_ref]).score)
    assert got["bleu"] > 0
    assert "tok:zh" in bleu(zh_pred, zh_ref, target_lang="zh")["bleu_signature"]
    assert "tok:char" in bleu(["猫が好きです"], ["犬が好きです"])["bleu_signature"]
    assert "tok:char" in bleu(PREDS, REFS, target_lang="ja")["bleu_signature"]
    assert "tok:13a" in bleu(PREDS, REFS, target_lang="de")["bleu_signature"]
    assert "tok:intl" in bleu(zh_pred, zh_ref, tokenize="intl", target_lang="zh")["bleu_signature"]
    with pytest.raises(ConfigError, match="13a"):
        bleu(PREDS, REFS, tokenize="nope")


TRUE = ["cat", "cat", "cat", "dog", "dog", "bird"]
PRED = ["cat", "cat", "dog", "dog", "bird", "bird"]


def test_accuracy_and_macro_f1_by_hand():
    assert accuracy(PRED, TRUE) == pytest.approx(100 * 4 / 6)
    per = per_class_f1(PRED, TRUE)
    assert list(per) == ["bird", "cat", "dog"]
    # cat:  tp 2 of 2 predicted -> P = 1;   2 of 3 true -> R = 2/3; F = 2*1*(2/3)/(1+2/3) = 0.8
    # dog:  tp 1 of 2 predicted -> P = 1/2; 1 of 2 true -> R = 1/2; F = 0.5
    # bird: tp 1 of 2 predicted -> P = 1/2; 1 of 1 true -> R = 1;   F = 2*(1/2)*1/(3/2) = 2/3
    assert per["cat"] == pytest.approx({"precision": 100.0, "recall": 200 / 3, "f1": 80.0, "support": 3.0})
    assert per["dog"] == pytest.approx({"precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2.0})
    assert per["bird"] == pytest.approx({"precision": 50.0, "recall": 100.0, "f1": 200 / 3, "support": 1.0})
    assert macro_f1(PRED, TRUE) == pytest.approx(100 * (0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_counts_labels_present_only_in_predictions():
    # a: P = 1/1, R = 1/2, F = 2/3; b (never true): P = 0/1, R = 0 (no support), F = 0 -> macro 1/3
    assert macro_f1(["a", "b"], ["a", "a"]) == pytest.approx(100 / 3)
    assert macro_f1(["a", "b"], ["a", "a"], labels=["a"]) == pytest.approx(200 / 3)
    assert macro_f1([1, 2, 2], [1, 2, 2]) == 100.0


def test_compute_returns_a_flat_dict_in_the_order_asked():
    got = compute(["rougeL", "bleu", "chrf"], PREDS, REFS)
    assert list(got) == ["rougeL", "bleu", "bleu_signature", "chrf", "chrf_signature"]
    assert got["bleu"] == bleu(PREDS, REFS)["bleu"]
    assert got["rougeL"] == rouge(PREDS, REFS)["rougeL"]
    assert compute(["accuracy", "macro_f1"], PRED, TRUE) == {"accuracy": accuracy(PRED, TRUE),
                                                             "macro_f1": macro_f1(PRED, TRUE)}


def test_compute_errors():
    with pytest.raises(ConfigError, match="rougeLsum") as err:
        compute(["bleu", "meteor"], PREDS, REFS)
    assert "meteor" in str(err.value)
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        compute(["bleu"], PREDS, REFS[:2])
    with pytest.raises(ValueError):
        compute(["accuracy"], PRED, TRUE[:3])
    with pytest.raises(ValueError):
        compute(["rouge1"], [], [])
    with pytest.raises(TypeError):
        compute(["bleu"], PREDS, REFS, target_lang="zh")  # unknown keyword: an error, not ignored


def test_higher_is_better():
    assert all(higher_is_better(name) for name in METRICS)
    assert not higher_is_better("loss") and not higher_is_better("val_loss")
    with pytest.raises(ConfigError):
        higher_is_better("nonsense")


@pytest.mark.parametrize("text, sentences", [
    ("Dr. Smith arrived. He sat down! Was it 5 p.m.? 10 people came.",
     ["Dr. Smith arrived.", "He sat down!", "Was it 5 p.m.?", "10 people came."]),
    ("J. Doe met Mrs. Brown.", ["J. Doe met Mrs. Brown."]),
    ('He said "Go." Then he left.', ['He said "Go."', "Then he left."]),
    ("Он пришёл. Она ушла.\nNew line", ["Он пришёл.", "Она ушла.", "New line"]),
    ("我来了。他走了！好吗？", ["我来了。", "他走了！", "好吗？"]),
    ("version 2.0 is out. lowercase does not split.", ["version 2.0 is out. lowercase does not split."]),
    ("The U.S. Army moved.", ["The U.S.", "Army moved."]),  # a documented limit
    ("", []),
])
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences
