"""Chat templates against transformers' own rendering (apply_chat_template), with the published Llama
3.2, Qwen3 and Gemma 2 templates (tests/data/chat_templates), and the scores of conversations.

Each tokenizer is a byte-level BPE trained here, with the special tokens its template writes added
as special tokens, and the BOS its family's tokenizer adds (Llama 3, Gemma) or none (Qwen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from conftest import PROMPTS, RESPONSES
from test_llm_parity import VARIANTS, hf_logits, hf_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from minirm import MinirmError, Scorer
from minirm.text.records import Sample, row_samples, rows_to_samples

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
# family variant: (template file, special tokens, bos, pad, where the template is stored)
SETUPS = {
    "llama": ("llama-3.2-instruct.jinja", ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                           "<|end_header_id|>", "<|eot_id|>"], "<|begin_of_text|>", "<|end_of_text|>",
              "tokenizer_config.json"),
    "qwen3": ("qwen3.jinja", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|endoftext|>",
              "chat_template.jinja"),
    "gemma2": ("gemma-2-it.jinja", ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<pad>",
               "chat_template.jinja"),
}
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a story about a dragon."},
     {"role": "assistant", "content": "  Once upon a time, a dragon baked bread.  "}],
    [{"role": "user", "content": "Café crème à Zürich? 你好"}, {"role": "assistant", "content": ""}],
]


def build(out: Path, variant: str) -> tuple[Path, object]:
    template, specials, bos, pad, where = SETUPS[variant]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PROMPTS + RESPONSES + ["user assistant model system"], trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": specials[1] if bos else
              "<|im_end|>", "pad_token": pad}
    source = (TEMPLATES / template).read_text(encoding="utf-8")
    if where == "tokenizer_config.json":
        config["chat_template"] = source
    else:
        (out / "chat_template.jinja").write_text(source, encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    model = hf_model(variant, vocab_size=400, pad_token_id=tok.token_to_id(pad),
                     bos_token_id=tok.token_to_id(bos) if bos else None)
    model.save_pretrained(out)
    return out, model


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    cache = {}

    def make(variant):
        if variant not in cache:
            cache[variant] = build(tmp_path_factory.mktemp("chat") / variant, variant)
        return cache[variant]

    return make


@pytest.mark.parametrize("variant", sorted(SETUPS))
def test_conversations_render_and_tokenize_as_apply_chat_template(chat_model, variant):
    model_dir, _ = chat_model(variant)
    scorer = Scorer.from_pretrained(str(model_dir))
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    for messages in CONVERSATIONS:
        assert scorer.tokenizer.chat_template.render(messages) == tok.apply_chat_template(messages, tokenize=False)
    expected = [tok.apply_chat_template(m, tokenize=True) for m in CONVERSATIONS]
    expected = [e["input_ids"] if isinstance(e, dict) or hasattr(e, "keys") else e for e in expected]
    ours = scorer.encode([Sample.conversation(m) for m in CONVERSATIONS])
    assert ours == expected
    bos = SETUPS[variant][2]
    if bos:  # the template writes BOS; nothing adds a second one
        bos_id = tok.convert_tokens_to_ids(bos)
        assert all(ids[0] == bos_id and ids.count(bos_id) == 1 for ids in ours)


@pytest.mark.parametrize("variant", sorted(SETUPS))
def test_the_skywork_v2_card_tokenizes_the_same(chat_model, variant):
    """Skywork-Reward-V2's card renders with tokenize=False, strips a leading BOS and tokenizes
    the rest with the tokenizer's special tokens: the same ids as minirm's."""
    model_dir, _ = chat_model(variant)
    scorer = Scorer.from_pretrained(str(model_dir))
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    card = []
    for messages in CONVERSATIONS:
        text = tok.apply_chat_template(messages, tokenize=False)
        if tok.bos_token is not None and text.startswith(tok.bos_token):
            text = text[len(tok.bos_token):]
        card.append(tok(text)["input_ids"])
    assert scorer.encode([Sample.conversation(m) for m in CONVERSATIONS]) == card


@pytest.mark.parametrize("variant", sorted(SETUPS))
def test_pairs_and_conversations_score_as_transformers(chat_model, variant):
    model_dir, reference = chat_model(variant)
    scorer = Scorer.from_pretrained(str(model_dir), batch_size=2)
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    pairs = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}] for p, r in zip(PROMPTS, RESPONSES)]
    ids = [tok.apply_chat_template(m, tokenize=True) for m in pairs + CONVERSATIONS]
    ids = [i["input_ids"] if hasattr(i, "keys") else i for i in ids]
    expected = hf_logits(reference, ids, pad=reference.config.pad_token_id)[:, 0]
    got = scorer.score_pairs(PROMPTS, RESPONSES) + scorer.score_samples(
        [s for m in CONVERSATIONS for s in row_samples({"messages": m})])
    torch.testing.assert_close(torch.tensor(got), expected, atol=1e-5, rtol=0)


def test_messages_rows_are_read_and_checked():
    samples, _, labels = rows_to_samples([{"messages": CONVERSATIONS[1]}, {"text": "x"}], ["in.jsonl:1", "in.jsonl:2"])
    assert samples[0].messages == CONVERSATIONS[1] and samples[0].response == CONVERSATIONS[1][-1]["content"]
    assert labels == ["in.jsonl:1 (field 'messages')", "in.jsonl:2 (field 'text')"]
    for bad, message in [([], "must be a non-empty list"), ([{"role": "user"}], r"messages\[0\] must be an object"),
                         ("hi", "must be a non-empty list")]:
        with pytest.raises(MinirmError, match=message):
            rows_to_samples([{"messages": bad}], ["in.jsonl:3"])


def test_a_template_refusal_names_the_sample(chat_model):
    model_dir, _ = chat_model("gemma2")
    scorer = Scorer.from_pretrained(str(model_dir))
    system = [{"role": "system", "content": "Be brief."}, *CONVERSATIONS[0]]
    with pytest.raises(MinirmError, match=r"^in\.jsonl:7: the chat template refuses it: System role not supported$"):
        scorer.score_samples([Sample.conversation(CONVERSATIONS[0]), Sample.conversation(system)],
                             labels=["in.jsonl:3", "in.jsonl:7"])


def test_a_tokenizer_without_a_template_refuses_conversations_but_scores_texts(chat_model, tmp_path):
    import shutil

    model_dir, _ = chat_model("qwen3")
    bare = shutil.copytree(model_dir, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink()
    scorer = Scorer.from_pretrained(str(bare))
    with pytest.raises(MinirmError, match="tokenizer has none .*give rows of formatted 'text'"):
        scorer.score_pairs(["Hi"], ["Hello"])
    assert len(scorer.score_texts(["<|im_start|>user\nHi<|im_end|>\n"])) == 1


def test_chat_template_jinja_wins_and_named_templates_use_the_default(tmp_path):
    from minirm.text.templates import read_chat_template

    (tmp_path / "chat_template.jinja").write_text("file")
    assert read_chat_template(tmp_path, {"chat_template": "config"}) == "file"
    (tmp_path / "chat_template.jinja").unlink()
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]
    assert read_chat_template(tmp_path, {"chat_template": named}) == "plain"
    with pytest.raises(MinirmError, match="no 'default' one"):
        read_chat_template(tmp_path, {"chat_template": named[:1]})
    assert read_chat_template(tmp_path, {}) is None


def test_template_helpers_match_transformers():
    """tojson keeps non-ASCII and takes indent; namespace refuses underscore names; generation
    blocks render as their content; strftime_now formats now."""
    from datetime import datetime

    from minirm.text.templates import ChatTemplate

    source = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
              "{% generation %}{{ m | tojson(indent=1) }}{% endgeneration %}{% endfor %}{{ ns.n }}"
              "{{ strftime_now('%Y') }}{{ bos_token }}")
    messages = [{"role": "user", "content": "Zürich <b>"}]
    ours = ChatTemplate(source, {"bos_token": "<s>"}, "test").render(messages)
    theirs = tf.utils.chat_template_utils.render_jinja_template([messages], chat_template=source,
                                                                 bos_token="<s>")[0][0]
    assert ours == theirs and "Zürich <b>" in ours and ours.endswith(f"1{datetime.now().year}<s>")
    with pytest.raises(MinirmError, match="underscore|may not set"):
        ChatTemplate("{% set ns = namespace(_x=1) %}", {}, "test").render(messages)


def test_variants_exist():
    assert set(SETUPS) <= set(VARIANTS)


def test_a_saved_model_keeps_its_chat_template_file(chat_model, tmp_path):
    """chat_template.jinja is one of the tokenizer's files: downloaded with a model and copied
    with a save, so a trained Qwen3 still renders its conversations."""
    from minirm.checkpoint import load_model, save_model
    from minirm.hub import METADATA

    assert "chat_template.jinja" in METADATA
    model_dir, _ = chat_model("qwen3")
    saved = save_model(load_model(model_dir)[0], tmp_path / "saved", model_dir)
    assert (saved / "chat_template.jinja").read_text() == (model_dir / "chat_template.jinja").read_text()
    pair = (["How do I bake bread?"], ["Mix flour and water."])
    assert Scorer.from_pretrained(str(saved)).score_pairs(*pair) == Scorer.from_pretrained(str(model_dir)).score_pairs(*pair)


@pytest.mark.parametrize("variant", ["qwen3", "llama"])
def test_preference_rows_of_whole_conversations(chat_model, variant, tmp_path):
    """chosen and rejected as message lists (the Skywork preference data's layout): each scored
    whole through the chat template, as transformers scores apply_chat_template's ids; through
    score.py they get score_chosen, score_rejected and correct."""
    from minirm.scoring.cli import main

    model_dir, reference = chat_model(variant)
    rows = [{"chosen": CONVERSATIONS[i], "rejected": CONVERSATIONS[(i + 1) % len(CONVERSATIONS)]}
            for i in range(len(CONVERSATIONS))]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    assert main(["--model", str(model_dir), "--input", str(data), "--output", str(out), "--dtype", "float32"]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    ids = [tok.apply_chat_template(m, tokenize=True) for r in rows for m in (r["chosen"], r["rejected"])]
    ids = [i["input_ids"] if hasattr(i, "keys") else i for i in ids]
    expected = hf_logits(reference, ids, pad=reference.config.pad_token_id)[:, 0].view(-1, 2)
    got = torch.tensor([[r["score_chosen"], r["score_rejected"]] for r in scored])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert [r["correct"] for r in scored] == [bool(c > r) for c, r in expected.tolist()]
    for bad, message in [({"chosen": CONVERSATIONS[0], "rejected": "no"}, "field 'rejected' must be a non-empty list"),
                         ({"prompt": "p", "chosen": CONVERSATIONS[0], "rejected": CONVERSATIONS[1]},
                          "drop the 'prompt' field")]:
        with pytest.raises(MinirmError, match=message):
            rows_to_samples([bad], ["in.jsonl:1"])


LONG = [{"role": "system", "content": "You are terse."}] + [
    {"role": role, "content": f"{'Question' if role == 'user' else 'Answer'} {i}: " + "words " * (1 + i)}
    for i, role in enumerate(["user", "assistant"] * 4)]


@pytest.mark.parametrize("variant", sorted(SETUPS))
def test_an_over_long_conversation_loses_its_oldest_turns_then_its_start(chat_model, variant):
    """Past max_length the oldest turns go, whole, after the system message and up to a user turn
    (as few as fit); the final user turn and the reply always stay. If they alone do not fit,
    their start is cut, BOS kept. The expected ids are transformers' apply_chat_template of the
    shortened conversation; score.py's note counts both."""
    model_dir, _ = chat_model(variant)
    tok = tf.AutoTokenizer.from_pretrained(model_dir)

    def hf_ids(messages):
        ids = tok.apply_chat_template(messages, tokenize=True)
        return ids["input_ids"] if hasattr(ids, "keys") else ids

    system, rest = LONG[:1], LONG[1:]
    if variant == "gemma2":  # Gemma 2's template refuses a system role
        system = []
    full = hf_ids(system + rest)
    shorter = [hf_ids(system + rest[i:]) for i in (2, 4, 6)]  # from each later user turn
    max_length = len(shorter[1])  # the turns from the second user turn on fit; from the first they do not
    assert len(full) > len(shorter[0]) > max_length
    scorer = Scorer.from_pretrained(str(model_dir), max_length=max_length)
    [ids] = scorer.encode([Sample.conversation(system + rest)])
    assert ids == shorter[1]
    assert scorer.tokenizer.cut == {"turns": 1}
    tight = Scorer.from_pretrained(str(model_dir), max_length=len(shorter[2]) - 5)
    [ids] = tight.encode([Sample.conversation(system + rest)])
    bos = SETUPS[variant][2]
    expected = shorter[2][-(len(shorter[2]) - 5):]
    if bos:
        expected = [tok.convert_tokens_to_ids(bos)] + expected[1:]
    assert ids == expected and len(ids) == len(shorter[2]) - 5
    assert tight.tokenizer.cut_note() == (f"1 texts were longer than --max-length {len(shorter[2]) - 5} tokens: "
                                          "1 were cut from the left")


def test_score_py_says_when_conversations_were_cut(chat_model, tmp_path, capsys):
    from minirm.scoring.cli import main

    model_dir, _ = chat_model("qwen3")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"messages": LONG}) + "\n" + json.dumps({"messages": CONVERSATIONS[0]}) + "\n")
    ids = tf.AutoTokenizer.from_pretrained(model_dir).apply_chat_template(LONG[:1] + LONG[5:], tokenize=True)
    fits = len(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert main(["--model", str(model_dir), "--input", str(rows), "--max-length", str(fits)]) == 0
    err = capsys.readouterr().err
    assert f"note: 1 texts were longer than --max-length {fits} tokens: 1 lost their oldest turns\n" in err
