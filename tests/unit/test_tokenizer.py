"""DeepSeek's tokenizer (issue item 2) and the token model's end of sequence (item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as Backend

from supernode.core import tokenizer, tokens, vocab_words
from supernode.tokenizer_cli import export, word_table_source

TEXT = "Hello, 世界! Tokenizers count 128-token blocks; émojis 🙂 too.\nNew line."


@pytest.fixture(scope="module")
def ds() -> tokenizer.DeepSeekTokenizer:
    return tokenizer.deepseek()


def test_vocabulary_is_deepseeks(ds: tokenizer.DeepSeekTokenizer) -> None:
    assert ds.vocab_size == tokens.VOCAB_SIZE == 129_280  # every id of R1's embedding table
    assert ds.backend.get_vocab_size(with_added_tokens=False) == 128_000
    assert ds.eos_token_id == 1 and ds.token_text(0) == "<｜begin▁of▁sentence｜>"
    assert ds.encode("<｜User｜>hi<｜Assistant｜>") == [128803, 6366, 128804]  # markers are single tokens
    assert ds.backend.token_to_id("<think>") == 128821  # V4's id (R1: 128798), see README
    assert ds.token_text(129_280) is None and all(ds.token_text(i) for i in (257, 127_999, 129_279))


def test_text_round_trips_and_counts_far_below_bytes(ds: tokenizer.DeepSeekTokenizer) -> None:
    ids = ds.encode(TEXT)
    assert ds.decode(ids) == TEXT and len(ids) < len(TEXT.encode()) / 2


def test_incremental_detokenizer_matches_whole_decode(ds: tokenizer.DeepSeekTokenizer) -> None:
    ids = ds.encode(TEXT)
    for step in (1, 2, 5):
        detok = ds.detokenizer()
        pieces = [detok.feed(ids[i : i + step]) for i in range(0, len(ids), step)]
        assert "".join(pieces) + detok.flush() == TEXT
        assert all("\ufffd" not in p for p in pieces)  # a split character is held back, never mangled


def test_word_table_is_derived_from_the_packaged_vocabulary(ds: tokenizer.DeepSeekTokenizer) -> None:
    ids = tokenizer.word_token_ids(ds)
    assert tuple(ids) == tokens.WORD_TOKENS == vocab_words.word_ids() and len(ids) > 20_000
    source = Path(vocab_words.__file__).read_text()
    assert word_table_source(ids) == source, "run `supernode tokenizer --word-table` to regenerate"


def test_token_model_output_renders_and_retokenizes_to_itself(ds: tokenizer.DeepSeekTokenizer) -> None:
    prompt = ds.encode("Summarise the CloudMatrix384 paper.")
    out = tokens.TokenModel(prompt, seed=3).generate(200)
    assert all(0 <= t < ds.vocab_size for t in out)
    text = ds.decode(out)
    assert ds.encode(text) == out and text.isascii()


def test_byte_tokenizer_is_still_selectable() -> None:
    byte = tokenizer.load("byte")
    assert byte.encode("hé") == [104, 195, 169] and byte.eos_token_id == 256
    with pytest.raises(ValueError, match="tokenizer: must be one of deepseek, byte"):
        tokenizer.load("gpt2")


def test_eos_plan_is_deterministic_per_prompt_and_seed_and_follows_the_distribution() -> None:
    lengths = tokens.OutputLengths.parse("lognormal:256:1.0")
    draws = [tokens.natural_length([7, i], 0, lengths) for i in range(4000)]
    assert sorted(draws)[2000] == pytest.approx(256, rel=0.1) and min(draws) >= tokens.MIN_NATURAL_LENGTH
    assert tokens.natural_length([1, 2, 3], 5, lengths) == tokens.natural_length([1, 2, 3], 5, lengths)
    assert len({tokens.natural_length([1, 2, 3], s, lengths) for s in range(20)}) > 10
    fixed = tokens.OutputLengths.parse("fixed:40")
    plan = tokens.plan_eos([9] * 10, 1, fixed, eos_token_id=1, min_tokens=0)
    assert plan == tokens.EosPlan(1, 10 + 40 - 1)
    assert tokens.plan_eos([9] * 10, 1, fixed, 1, min_tokens=60).position == 10 + 60 - 1


def test_token_model_emits_eos_at_the_planned_position() -> None:
    prompt = [300 + i for i in range(10)]
    plan = tokens.plan_eos(prompt, 2, tokens.OutputLengths.parse("fixed:7"), eos_token_id=1)
    first = tokens.next_token(prompt, 2, plan)
    model = tokens.TokenModel([*prompt, first], 2, plan)
    out = [first, *model.generate(6)]
    assert out[-1] == 1 and 1 not in out[:-1] and len(out) == 7
    assert out[:-1] == [first, *tokens.TokenModel([*prompt, first], 2).generate(5)]  # same words before


@pytest.mark.parametrize("spec", ["", "normal:1:2", "uniform:9:3", "lognormal:0:1", "fixed:x", "geometric"])
def test_bad_output_length_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="output lengths"):
        tokens.OutputLengths.parse(spec)


def test_export_is_a_hugging_face_tokenizer_directory(
    tmp_path: Path, ds: tokenizer.DeepSeekTokenizer
) -> None:
    export(tmp_path, 163_840)
    loaded = Backend.from_file(str(tmp_path / "tokenizer.json"))
    assert loaded.encode(TEXT, add_special_tokens=False).ids == ds.encode(TEXT)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["model_max_length"] == 163_840
    assert config["eos_token"] == "<｜end▁of▁sentence｜>" and config["add_bos_token"] is False
