"""Tokenizers of Hugging Face directories: GPT-2's vocab.json + merges.txt, BERT's vocab.txt, special-token ids
from config.json, and the special tokens a BERT/RoBERTa tokenizer puts around a sequence."""

from __future__ import annotations

import json

import pytest
from hf_tiny import gpt2_files, sentences

from lmlab.interop import load_hf, load_tokenizer
from lmlab.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

def test_gpt2_vocab_and_merges_match_transformers(tmp_path):
    gpt2_files(tmp_path)
    ours = Tokenizer.load(tmp_path)
    theirs = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    texts = sentences(200, seed=2) + ["a<|endoftext|>b", " leading space", ""]
    for text in texts:
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == text
    assert ours.bos_id == ours.eos_id == theirs.eos_token_id  # <|endoftext|>


def test_bert_vocab_txt_matches_transformers(tmp_path):
    words = sorted({w for s in sentences(400, seed=3) for w in s.lower().split()})
    chars = sorted({c for s in sentences(400, seed=3) for c in s.lower() if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words[::3]]
    (tmp_path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    ours = Tokenizer.load(tmp_path)
    theirs = transformers.BertTokenizer.from_pretrained(tmp_path)
    for text in sentences(200, seed=4):
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text


def test_roles_from_config_json_and_templates(tmp_path):
    """A directory whose tokenizer files name no special tokens takes them from config.json's ids; a BERT
    tokenizer from vocab.txt gets BERT's [CLS] ... [SEP] template, as transformers' does."""
    cfg = transformers.BertConfig(vocab_size=12, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=16, pad_token_id=5)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<p>", "hello", "world", ",", "!", "##s", "x"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    _, tok = load_hf(tmp_path)
    assert tok.pad_id == 5  # config.json's pad_token_id beats the usual [PAD]
    assert (tok.cls_id, tok.sep_id, tok.mask_id) == (2, 3, 4)
    theirs = transformers.BertTokenizer.from_pretrained(tmp_path)
    for text in ("hello world!", "hellos, x"):
        assert tok.tok.encode(text).ids == theirs(text)["input_ids"]
        assert tok.tok.encode(text, text).ids == theirs(text, text)["input_ids"]
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]"}))
    assert load_hf(tmp_path)[1].pad_id == 0  # the tokenizer's own files win over config.json
    assert load_tokenizer(tmp_path).to_json() == load_hf(tmp_path)[1].to_json()
    # a chat model's template comes along (what sft fine-tuning and apply_chat_template use)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    assert load_hf(tmp_path)[1].chat_template == "{{ messages[0]['content'] }}"


def test_roberta_vocab_files_get_the_roberta_template(tmp_path):
    cfg = transformers.RobertaConfig(vocab_size=500, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=20)
    transformers.RobertaModel(cfg).save_pretrained(tmp_path)
    gpt2_files(tmp_path)
    learned = json.loads((tmp_path / "vocab.json").read_text())
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}  # RoBERTa's layout, <mask> last
    vocab.update({t: i + 4 for t, i in learned.items()})
    vocab["<mask>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    _, tok = load_hf(tmp_path)
    theirs = transformers.RobertaTokenizer.from_pretrained(tmp_path)
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.mask_id) == (theirs.bos_token_id, theirs.pad_token_id,
                                                                 theirs.eos_token_id, theirs.mask_token_id)
    for text in ("the quick brown fox", "café <mask> naïve", "the<mask>fox"):
        assert tok.tok.encode(text).ids == theirs(text)["input_ids"], text
    # roberta-base's tokenizer_config.json makes <mask> absorb the space before it
    mask = {"content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False, "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {str(len(vocab) - 1): mask},
                                                                "mask_token": "<mask>"}))
    _, tok = load_hf(tmp_path)
    theirs = transformers.RobertaTokenizer.from_pretrained(tmp_path)
    for text in ("café <mask> naïve", "a  <mask>"):
        assert tok.tok.encode(text).ids == theirs(text)["input_ids"], text
    assert tok.encode("café <mask>")[-1] == tok.mask_id and len(tok.encode("café <mask>")) == 2
