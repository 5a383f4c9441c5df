"""Tokenizer parity with transformers on the same files, the chat format, and transcripts.

Expected token ids come from transformers' tokenizers (the reference) called the way the
model cards call them; expected strings are written out by hand from the chaiverse
PygmalionFormatter templates and the hh-rlhf transcript layout.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import pytest
import transformers as tf

from minirm import MinirmError, Scorer
from minirm.config import ModelConfig
from minirm.text.formats import ChatTurn, chat_text, pygmalion_context, pygmalion_text
from minirm.text.records import parse_transcript, transcript_sample
from minirm.text.tokenizer import load_tokenizer
from conftest import DEBERTA_TOKENIZER_CONFIG, PROMPTS, RESPONSES, minilm_dir, tiny_config

TRICKY_PROMPTS = [
    "Qu'est-ce qu'un café crème à Zürich? Ångström, naïve, résumé.",
    "你好，世界！日本語のテキストも。한국어",
    "Emoji: 👍🏽🚀 and 🤖🤖, flags 🇫🇷",
    "   lots\tof   whitespace\n\n\nand\u00a0nbsp\u200bzero-width   ",
    "UPPER lower MiXeD Ünïcödé",
    "An empty response follows.",
]
TRICKY_RESPONSES = [
    "Un café, s'il vous plaît — merci!",
    "こんにちは",
    "😀" * 20,
    "\t\n  ",
    "supercalifragilisticexpialidocious antidisestablishmentarianism " * 3,
    "",
]
ALL_PROMPTS, ALL_RESPONSES = PROMPTS + TRICKY_PROMPTS, RESPONSES + TRICKY_RESPONSES
LONG_PROMPT = "Tell me everything about the history of bread baking in Europe. " * 12
LONG_RESPONSE = "Bread has been baked for thousands of years, in ovens of clay and stone. " * 12


def cfg_for(family: str, **overrides) -> ModelConfig:
    return ModelConfig.from_dict(tiny_config(family, **overrides).to_dict())


@lru_cache(maxsize=None)
def minilm_reference():
    return tf.AutoTokenizer.from_pretrained(minilm_dir())


def hf_pairs(tok, prompts, responses, **kw) -> list[list[int]]:
    """transformers' ids for each pair, called one pair at a time as the model cards call it
    (an empty response is then no second text: [CLS] p [SEP]; tests/test_empty_inputs.py)."""
    return [tok(p, r, **kw)["input_ids"] for p, r in zip(prompts, responses)]


# --- BERT (MiniLM tokenizer.json) ----------------------------------------------------------

@pytest.mark.parametrize("max_length", [512, 40, 16])
def test_bert_pairs_match_transformers(max_length):
    ours = load_tokenizer(minilm_dir(), cfg_for("bert"), max_length=max_length)
    expected = hf_pairs(minilm_reference(), ALL_PROMPTS, ALL_RESPONSES, truncation=True, max_length=max_length)
    assert ours.encode_pairs(ALL_PROMPTS, ALL_RESPONSES) == expected
    if max_length < 512:
        assert max(map(len, expected)) == max_length  # truncation really happened


@pytest.mark.parametrize("max_length", [512, 16])
def test_scorer_encode_pairs_match_transformers(make_checkpoint, max_length):
    model_dir, _ = make_checkpoint("bert")  # ships the MiniLM tokenizer files
    scorer = Scorer.from_pretrained(str(model_dir), max_length=max_length, device="cpu")
    expected = hf_pairs(minilm_reference(), ALL_PROMPTS, ALL_RESPONSES, truncation=True, max_length=max_length)
    assert scorer.encode_pairs(ALL_PROMPTS, ALL_RESPONSES) == expected


def _long_pair_checks(ours, expected, embedded_max, pad_id):
    assert len(expected) > embedded_max  # the pair is longer than what the file pins
    assert ours == expected
    assert pad_id not in ours


def test_embedded_truncation_and_padding_are_ignored():
    raw = json.loads((minilm_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    assert raw["truncation"]["max_length"] == 128  # what sentence-transformers pinned
    assert raw["padding"]["strategy"] == {"Fixed": 128}
    pad_id = raw["padding"]["pad_id"]

    ours = load_tokenizer(minilm_dir(), cfg_for("bert"))  # default max_length: 512
    expected = minilm_reference()(LONG_PROMPT, LONG_RESPONSE, truncation=True, max_length=512)["input_ids"]
    _long_pair_checks(ours.encode_pairs([LONG_PROMPT], [LONG_RESPONSE])[0], expected, 128, pad_id)
    # a short pair is not padded out to the pinned 128 either
    short = ours.encode_pairs(["Hi"], ["Hello"])[0]
    assert short == minilm_reference()("Hi", "Hello", truncation=True, max_length=512)["input_ids"]
    assert len(short) < 10


def test_tighter_embedded_truncation_and_padding_are_ignored(tmp_path):
    raw = json.loads((minilm_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    raw["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    raw["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None,
                      "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_dir() / name, tmp_path / name)

    ours = load_tokenizer(tmp_path, cfg_for("bert"))
    expected = minilm_reference()(LONG_PROMPT, LONG_RESPONSE, truncation=True, max_length=512)["input_ids"]
    _long_pair_checks(ours.encode_pairs([LONG_PROMPT], [LONG_RESPONSE])[0], expected, 64, 0)
    short = ours.encode_pairs(["Hi"], ["Hello"])[0]
    assert short == minilm_reference()("Hi", "Hello")["input_ids"]


# --- fallbacks when there is no tokenizer.json ----------------------------------------------

def _vocab_only(tmp_path: Path, tokenizer_config: dict | None) -> Path:
    shutil.copy(minilm_dir() / "vocab.txt", tmp_path / "vocab.txt")
    if tokenizer_config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return tmp_path


def test_vocab_txt_fallback_matches_transformers(tmp_path):
    config = json.loads((minilm_dir() / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True
    folder = _vocab_only(tmp_path, config)
    reference = tf.BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    for max_length in (512, 24):
        ours = load_tokenizer(folder, cfg_for("bert"), max_length=max_length).encode_pairs(ALL_PROMPTS, ALL_RESPONSES)
        kw = dict(truncation=True, max_length=max_length)
        assert ours == hf_pairs(reference, ALL_PROMPTS, ALL_RESPONSES, **kw)
        assert ours == hf_pairs(minilm_reference(), ALL_PROMPTS, ALL_RESPONSES, **kw)  # same as tokenizer.json


def test_vocab_txt_fallback_cased(tmp_path):
    folder = _vocab_only(tmp_path, {"do_lower_case": False})
    reference = tf.BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=False)
    ours = load_tokenizer(folder, cfg_for("bert")).encode_pairs(ALL_PROMPTS, ALL_RESPONSES)
    expected = hf_pairs(reference, ALL_PROMPTS, ALL_RESPONSES, truncation=True, max_length=512)
    assert ours == expected
    assert 100 in expected[-2]  # "UPPER ..." is [UNK] in an uncased vocab when not lowercased


def test_vocab_txt_fallback_without_tokenizer_config_follows_transformers_default(tmp_path):
    folder = _vocab_only(tmp_path, None)
    (folder / "config.json").write_text(json.dumps(tiny_config("bert").to_dict()))
    reference = tf.AutoTokenizer.from_pretrained(folder)  # what transformers builds from the same directory
    ours = load_tokenizer(folder, cfg_for("bert")).encode_pairs(ALL_PROMPTS, ALL_RESPONSES)
    assert ours == hf_pairs(reference, ALL_PROMPTS, ALL_RESPONSES, truncation=True, max_length=512)


def test_roberta_bpe_fallback_matches_transformers(bpe_files):
    cfg = cfg_for("roberta")
    ours = load_tokenizer(bpe_files, cfg).encode_pairs(ALL_PROMPTS, ALL_RESPONSES)
    reference = tf.RobertaTokenizerFast(str(bpe_files / "vocab.json"), str(bpe_files / "merges.txt"))
    assert ours == hf_pairs(reference, ALL_PROMPTS, ALL_RESPONSES, truncation=True, max_length=512)


@pytest.mark.parametrize("max_length", [512, 12])
def test_gpt2_bpe_fallback_matches_transformers(bpe_files, max_length):
    texts = [chat_text(p, r) for p, r in zip(ALL_PROMPTS, ALL_RESPONSES)] + ["a<|endoftext|>b", " leading space"]
    ours = load_tokenizer(bpe_files, cfg_for("gpt2"), max_length=max_length).encode_texts(texts)
    reference = tf.GPT2TokenizerFast(str(bpe_files / "vocab.json"), str(bpe_files / "merges.txt"),
                                     truncation_side="left")
    assert ours == [reference(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    assert 50256 in ours[-2]  # <|endoftext|> is one special token, not split into pieces


# --- GPT-2 truncation side ----------------------------------------------------------------------

def _gpt2_reference(bpe_files: Path, side: str):
    return tf.GPT2TokenizerFast(str(bpe_files / "vocab.json"), str(bpe_files / "merges.txt"), truncation_side=side)


def test_gpt2_truncates_from_the_left_by_default(bpe_files):
    text = chat_text(LONG_PROMPT, "The final words of the reply.")
    full = _gpt2_reference(bpe_files, "left")(text)["input_ids"]
    ours = load_tokenizer(bpe_files, cfg_for("gpt2"), max_length=32).encode_texts([text])[0]
    assert len(full) > 32
    assert ours == full[-32:]
    assert ours == _gpt2_reference(bpe_files, "left")(text, truncation=True, max_length=32)["input_ids"]


def test_gpt2_truncation_side_right_keeps_the_start(bpe_files):
    text = chat_text(LONG_PROMPT, "The final words of the reply.")
    full = _gpt2_reference(bpe_files, "right")(text)["input_ids"]
    ours = load_tokenizer(bpe_files, cfg_for("gpt2"), max_length=32, truncation_side="right").encode_texts([text])[0]
    assert ours == full[:32]
    assert ours == _gpt2_reference(bpe_files, "right")(text, truncation=True, max_length=32)["input_ids"]


def test_gpt2_scorer_keeps_the_end_of_the_conversation(make_checkpoint):
    model_dir, _ = make_checkpoint("gpt2")
    reference = tf.AutoTokenizer.from_pretrained(model_dir)
    text = chat_text(LONG_PROMPT, "The final words of the reply.")
    for side in ("left", "right"):
        scorer = Scorer.from_pretrained(str(model_dir), max_length=24, device="cpu",
                                        truncation_side=None if side == "left" else side)
        reference.truncation_side = side
        expected = reference(text, truncation=True, max_length=24)["input_ids"]
        assert scorer.encode_pairs([LONG_PROMPT], ["The final words of the reply."]) == [expected]


def test_bad_truncation_side():
    with pytest.raises(MinirmError):
        load_tokenizer(minilm_dir(), cfg_for("bert"), truncation_side="middle")


# --- max_length bounds ----------------------------------------------------------------------

@pytest.mark.parametrize("family, usable", [("roberta", 512), ("bert", 512), ("gpt2", 1024)])
def test_max_length_above_usable_positions_is_refused(make_checkpoint, family, usable):
    model_dir, _ = make_checkpoint(family)
    cfg = ModelConfig.from_file(model_dir / "config.json")
    assert load_tokenizer(model_dir, cfg, max_length=usable).max_length == usable
    with pytest.raises(MinirmError) as err:
        load_tokenizer(model_dir, cfg, max_length=usable + 1)
    assert str(usable) in str(err.value) and "\n" not in str(err.value)


def test_roberta_usable_positions_follow_pad_token_id():
    # fairseq positions run pad + 1 .. pad + length, so 130 positions with pad 3 leave 126 usable
    cfg = cfg_for("roberta", max_position_embeddings=130, pad_token_id=3)
    with pytest.raises(MinirmError):
        load_tokenizer(minilm_dir(), cfg, max_length=127)
    assert load_tokenizer(minilm_dir(), cfg, max_length=126).max_length == 126


# --- the Pygmalion chat format --------------------------------------------------------------

def test_pygmalion_context_exact():
    history = [ChatTurn("user", "Hi there"), ChatTurn("bot", "Hello! How are you?"), ChatTurn("user", "Good.")]
    got = pygmalion_context(history, bot_name="Ember", user_name="Ana", memory="A friendly dragon.",
                            scenario="Ember bakes bread.")
    assert got == (
        "Ember's Persona: A friendly dragon.\n####\n"
        "Ember bakes bread.\n<START>\n"
        "Ana: Hi there\n"
        "Ember: Hello! How are you?\n"
        "Ana: Good.\n"
        "Ember:"
    )
    assert pygmalion_text(history, "Glad to hear it.", bot_name="Ember", user_name="Ana",
                          memory="A friendly dragon.", scenario="Ember bakes bread.").startswith(got)


def test_pygmalion_keeps_only_the_last_ten_messages():
    history = [ChatTurn("user" if i % 2 == 0 else "bot", f"message {i}") for i in range(12)]
    got = pygmalion_context(history, bot_name="Bot", user_name="User", memory="m", scenario="p")
    expected_turns = "".join(
        f"{'User' if i % 2 == 0 else 'Bot'}: message {i}\n" for i in range(2, 12)
    )
    assert got == "Bot's Persona: m\n####\np\n<START>\n" + expected_turns + "Bot:"
    assert "message 0\n" not in got and "message 1\n" not in got


def test_chat_text_is_one_exchange():
    got = chat_text("What is bread?", "Flour and water.", bot_name="Bot", user_name="User", memory="m")
    assert got.startswith("Bot's Persona: m\n####\n\n<START>\nUser: What is bread?\nBot:")
    assert got.endswith("Flour and water.")


# --- hh-rlhf transcripts --------------------------------------------------------------------

TRANSCRIPT = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine"


def test_parse_transcript():
    turns = parse_transcript(TRANSCRIPT)
    assert [(t.speaker, t.message) for t in turns] == [
        ("user", "hi"), ("bot", "hello"), ("user", "how are you?"), ("bot", "fine"),
    ]


def test_transcript_sample():
    sample = transcript_sample(TRANSCRIPT)
    assert sample.prompt == "Human: hi\n\nAssistant: hello\n\nHuman: how are you?"
    assert sample.response == "fine"
    assert [(t.speaker, t.message) for t in sample.history] == [("user", "hi"), ("bot", "hello"),
                                                               ("user", "how are you?")]


def test_text_that_is_not_a_transcript_is_scored_as_is():
    sample = transcript_sample("just some text")
    assert sample.prompt is None and sample.response == "just some text"
    ends_with_human = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye"
    assert transcript_sample(ends_with_human).prompt is None


def test_pygmalion_writes_the_persona_template_even_when_empty():
    got = pygmalion_context([ChatTurn("user", "Hi")], bot_name="Bot", user_name="User")
    assert got == "Bot's Persona: \n####\n\n<START>\nUser: Hi\nBot:"


# --- DeBERTa-v2 from spm.model alone (microsoft/deberta-v2-xxlarge ships no tokenizer.json) ---------

@pytest.fixture(scope="module")
def deberta_spm_dir(deberta_spm, tmp_path_factory) -> Path:
    """deberta_spm (conftest) beside the files microsoft/deberta-v2-xxlarge has: config.json
    (model_type deberta-v2) and tokenizer_config.json {do_lower_case, vocab_type}."""
    out = tmp_path_factory.mktemp("deberta-spm")
    shutil.copy(deberta_spm, out / "spm.model")
    (out / "tokenizer_config.json").write_text(json.dumps(DEBERTA_TOKENIZER_CONFIG))
    (out / "config.json").write_text(json.dumps(tf.DebertaV2Config(vocab_size=1001).to_dict()))
    return out


SPM_NORMALIZED_TEXTS = ["你好，世界！", "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３！", "ﬁ ligature ①", "x\u3000y",
                        "  a   b\t\tc\n\nd  ", ""]


def test_deberta_spm_model_matches_sentencepiece(deberta_spm_dir):
    """The ground truth: SentencePiece itself, with the file's own normalization (NFKC here)."""
    spm = pytest.importorskip("sentencepiece")
    processor = spm.SentencePieceProcessor(model_file=str(deberta_spm_dir / "spm.model"))
    ours = load_tokenizer(deberta_spm_dir, ModelConfig.from_file(deberta_spm_dir / "config.json"))
    texts = ALL_PROMPTS + ALL_RESPONSES + SPM_NORMALIZED_TEXTS
    assert [ours.tokenizer.encode(t, add_special_tokens=False).ids for t in texts] == processor.encode(texts)
    assert processor.encode("你好，世界！") != processor.encode("你好世界")  # the "，" is read, not [UNK]


@pytest.mark.parametrize("max_length", [512, 20])
def test_deberta_spm_model_matches_transformers(deberta_spm_dir, max_length):
    pytest.importorskip("google.protobuf")
    if tuple(int(part) for part in tf.__version__.split(".")[:2]) < (5, 25):
        pytest.skip(f"transformers {tf.__version__} ignores spm.model's normalization (5.25 applies it, as "
                    "SentencePiece does; test_deberta_spm_model_matches_sentencepiece checks against SentencePiece)")
    reference = tf.AutoTokenizer.from_pretrained(deberta_spm_dir)  # converted from spm.model by transformers
    cfg = ModelConfig.from_file(deberta_spm_dir / "config.json")
    ours = load_tokenizer(deberta_spm_dir, cfg, max_length=max_length)
    prompts = ALL_PROMPTS + ["", "literal [MASK] and [SEP] and [CLS]x tokens", "Tabs\tand\nnewlines  and   runs"]
    prompts += SPM_NORMALIZED_TEXTS
    responses = ALL_RESPONSES + ["only a response", "[MASK]", "  trailing spaces  "]
    responses += ["Ｏｋ！", "fine", "①②", "a\u3000b", "x", "  "]
    kw = dict(truncation=True, max_length=max_length)
    assert ours.encode_pairs(prompts, responses) == hf_pairs(reference, prompts, responses, **kw)
    assert ours.encode_texts(prompts) == [reference(p, **kw)["input_ids"] for p in prompts]
    assert ours.tokenizer.token_to_id("[MASK]") == reference.mask_token_id == 1000  # appended after the pieces


def test_deberta_spm_model_is_saved_as_tokenizer_json(deberta_spm_dir, tmp_path):
    """A model trained from an spm.model-only base is saved with a tokenizer.json that scores the same."""
    from minirm.text.tokenizer import read_tokenizer

    cfg = ModelConfig.from_file(deberta_spm_dir / "config.json")
    read_tokenizer(deberta_spm_dir, cfg).save(str(tmp_path / "tokenizer.json"))
    again = load_tokenizer(tmp_path, cfg).encode_pairs(ALL_PROMPTS, ALL_RESPONSES)
    assert again == load_tokenizer(deberta_spm_dir, cfg).encode_pairs(ALL_PROMPTS, ALL_RESPONSES)


def test_broken_spm_model_is_one_line(deberta_spm_dir, tmp_path):
    for name in ("config.json", "tokenizer_config.json"):
        shutil.copy(deberta_spm_dir / name, tmp_path / name)
    (tmp_path / "spm.model").write_bytes((deberta_spm_dir / "spm.model").read_bytes()[:100])
    cfg = ModelConfig.from_file(tmp_path / "config.json")
    with pytest.raises(MinirmError, match=r"spm.model: not a valid SentencePiece model .*re-download it") as err:
        load_tokenizer(tmp_path, cfg)
    assert "\n" not in str(err.value)
