"""Tokenization with the `tokenizers` library, the way each model card tokenizes.

- BERT / RoBERTa / DeBERTa reward models encode (prompt, response) as a pair, one pair
  at a time as their model cards call it: `tokenizer(prompt, response, truncation=True,
  max_length=512)`, longest-first truncation, token types dropped (all 0). That call reads
  an empty response as no second text at all: ("hi", "") is `[CLS] hi [SEP]`, with no
  second [SEP]. transformers' batched call would keep the pair (`[CLS] hi [SEP] [SEP]`);
  minirm follows the one-pair call always, so a score never depends on the batch. A
  whitespace-only response is still a pair, and so is an empty prompt.
- GPT-2 reward models read their score at the last token, so they encode one
  pre-formatted text and truncate from the LEFT: the end of the conversation is kept.
- Decoder LLM reward models (Llama, Qwen, Gemma) read a conversation rendered by their
  tokenizer's chat template (templates.py, with its BOS rule) and score its last token, so a
  conversation longer than max_length loses its OLDEST turns, whole (after the system message,
  up to a user turn, so that roles still alternate), re-rendered until it fits; the final user
  turn and the reply are always kept. If those alone do not fit, their start is cut (left
  truncation, keeping BOS). A text row is tokenized as it is, cut from the left. `cut` counts
  what was cut, for score.py's note.

A tokenizer.json may carry its own padding or truncation (sentence-transformers
checkpoints pin max_length 128, for example). Both are switched off here and replaced by
ours, so nothing in a tokenizer file silently changes a score.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..config import ModelConfig
from ..errors import MinirmError, check_number
from ..hub import TOKENIZER_VOCABS, resolve_model
from .formats import pygmalion_text
from .records import Sample
from .spm import CONTROL, UNIGRAM, USER_DEFINED, read_spm
from .templates import ChatTemplate, TemplateRefused, conversation, read_chat_template, special_tokens

CHAT_OPTIONS = {"bot_name": "--bot-name", "user_name": "--user-name", "memory": "--memory"}


class RewardTokenizer:
    def __init__(self, tokenizer: Tokenizer, cfg: ModelConfig, max_length: int | None = None,
                 truncation_side: str | None = None, chat_names: dict | None = None, source: str = "the tokenizer",
                 chat_template: ChatTemplate | None = None):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.source = source
        self.chat_template = chat_template  # for families that read conversations through one
        self.pair_input = cfg.spec.pair_input  # GPT-2 models score one formatted text
        self.chat_names = self._check_chat_names(chat_names or {})
        limit = usable_positions(cfg)
        check_number("max_length", max_length, integer=True, low=1, optional=True)
        if max_length and max_length > limit:
            raise MinirmError(f"--max-length {max_length} exceeds this model's {limit} positions; use at most {limit}")
        # 512 unless the family says otherwise (decoder LLMs: their whole context)
        self.max_length = min(max_length or cfg.spec.default_max_length or cfg.max_positions, limit)
        self._check_room(self.max_length)
        self.truncation_side = truncation_side or cfg.spec.truncation_side  # GPT-2: left, keeping the end
        if self.truncation_side not in ("left", "right"):
            raise MinirmError(f"truncation side must be 'left' or 'right', not {self.truncation_side!r}")
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_length, strategy="longest_first", direction=self.truncation_side)
        self.pad_id = pad_token_id(tokenizer, cfg)
        self.cut: collections.Counter = collections.Counter()  # what max_length cut: "turns", "start"
        # ids past the embedding table end in an IndexError deep in the model: what every text can
        # emit (the vocabulary, the special tokens framing it, the padding) is checked here, and the
        # added tokens beyond the table, which only some texts hold, per sequence (first_unknown)
        self.vocab_size = cfg.vocab_size
        self.may_exceed = self._check_vocabulary()

    def _check_vocabulary(self) -> bool:
        """One line when the model's vocab_size cannot hold the ids this tokenizer always emits;
        returns whether some added token is beyond it."""
        vocab = self.tokenizer.get_vocab(with_added_tokens=False)
        framed = self.tokenizer.encode("a", "b" if self.pair_input else None).ids
        named = [(max(vocab.values(), default=-1), "its vocabulary has ids up to"),
                 (max(framed, default=-1), "its special tokens have ids up to"),
                 (self.pad_id, "its padding id is")]
        top, what = max(named)
        if top >= self.vocab_size:
            raise MinirmError(f"{self.source}: {what} {top}, but the model's config.json has vocab_size "
                              f"{self.vocab_size}; the tokenizer is not this model's (pass its own with --tokenizer), "
                              "or config.json is wrong")
        added = self.tokenizer.get_added_tokens_decoder()
        return any(i >= self.vocab_size for i in added)

    def first_unknown(self, sequences: list[list[int]]) -> tuple[int, int] | None:
        """(index, id) of the first sequence holding an id the model has no embedding for, or None."""
        if not self.may_exceed:
            return None
        for i, ids in enumerate(sequences):
            if ids and max(ids) >= self.vocab_size:
                return i, max(ids)
        return None

    def unknown_reason(self, token_id: int) -> str:
        token = self.tokenizer.id_to_token(token_id)
        return (f"holds the added token {token!r} (id {token_id}), beyond the model's vocab_size {self.vocab_size}; "
                "remove it from the text, or use the tokenizer the model was trained with")

    def _check_chat_names(self, names: dict) -> dict:
        """The Pygmalion names apply to chat-format (GPT-2) models only; elsewhere they would do nothing."""
        names = {k: v for k, v in names.items() if v is not None}
        for key, value in names.items():
            if key not in CHAT_OPTIONS:
                raise MinirmError(f"unknown chat name {key!r}; use {', '.join(CHAT_OPTIONS)}")
            if not isinstance(value, str):
                raise MinirmError(f"{CHAT_OPTIONS[key]} must be text, got {value!r}")
        if names and self.pair_input:
            given = ", ".join(CHAT_OPTIONS[k] for k in names)
            raise MinirmError(f"{given}: the Pygmalion chat format is for GPT-2 chat models; this "
                              f"{self.cfg.family} model reads (prompt, response) pairs, so drop the option")
        return names

    def _check_room(self, max_length: int) -> None:
        """A max length must leave room for the special tokens and one token of each text: below that,
        truncation cannot reach the length and a long text would overflow it."""
        if self.pair_input:
            specials = self.tokenizer.num_special_tokens_to_add(True)
            needed, what = specials + 2, f"a (prompt, response) pair needs its {specials} special tokens plus one token each"
        else:
            specials = self.tokenizer.num_special_tokens_to_add(False)
            needed, what = specials + 1, f"a text needs its {specials} special tokens plus one token"
        if max_length < needed:
            raise MinirmError(f"--max-length {max_length} is too short for this model: {what}; use at least {needed}")

    def encode_pairs(self, prompts: list[str], responses: list[str]) -> list[list[int]]:
        # tokenizer(prompt, "") drops the empty second text (see the module docstring)
        inputs = [(p, r) if r else p for p, r in zip(prompts, responses)]
        return [e.ids for e in self.tokenizer.encode_batch(inputs)]

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Texts as given; for a chat-template model, a text that already starts with BOS (one
        rendered by the template) gets no second one."""
        if self.chat_template is None:
            return [e.ids for e in self.tokenizer.encode_batch(texts)]
        encoded = self._encode_rendered(texts)
        self.cut["start"] += sum(cut for _, cut in encoded)
        return [ids for ids, _ in encoded]

    def _encode_rendered(self, texts: list[str]) -> list[tuple[list[int], bool]]:
        """(ids, whether max_length cut it) per text. Tokenized without the tokenizer's special
        tokens when the text starts with BOS, with them otherwise (templates.py): one BOS either
        way. A text longer than max_length is cut from the truncation side, BOS kept."""
        framed = [self.chat_template.starts_with_bos(t) for t in texts]
        out: list = [None] * len(texts)
        for with_bos in (True, False):
            group = [i for i, f in enumerate(framed) if f == with_bos]
            if group:
                encoded = self.tokenizer.encode_batch([texts[i] for i in group], add_special_tokens=not with_bos)
                for i, e in zip(group, encoded):
                    ids = e.ids
                    if e.overflowing and with_bos and self.truncation_side == "left":  # BOS was cut first
                        ids = [self.tokenizer.token_to_id(self.chat_template.bos), *ids[1:]]
                    out[i] = (ids, bool(e.overflowing))
        return out

    def _fit_by_turns(self, messages: list[dict], cut_ids: list[int]) -> list[int]:
        """The ids of `messages`, which max_length cut to `cut_ids`: without their oldest turns, as
        few dropped as fit (after a system message, up to a user turn); if even the last user turn
        on does not fit, that shortest conversation with its start cut."""
        system = messages[:1] if messages and messages[0].get("role") == "system" else []
        rest = messages[len(system):]
        for start in [i for i, m in enumerate(rest) if m.get("role") == "user" and i > 0]:
            try:
                text = self.chat_template.render(system + rest[start:])
            except TemplateRefused:
                continue  # a template that needs what was dropped (a first turn of some kind): drop more
            [(ids, cut)] = self._encode_rendered([text])
            if not cut:
                self.cut["turns"] += 1
                return ids
            cut_ids = ids
        self.cut["start"] += 1
        return cut_ids

    def encode_samples(self, samples: list[Sample]) -> list[list[int]]:
        """Format and tokenize, keeping order: the one path that scoring and training share.

        Pair models take (prompt, response) as a tokenizer pair; everything else is one text
        (for GPT-2, the Pygmalion chat format when the sample carries a conversation).
        """
        ids: list[list[int] | None] = [None] * len(samples)
        pairs = [i for i, s in enumerate(samples) if s.prompt is not None and self.pair_input]
        paired = set(pairs)
        texts = [i for i in range(len(samples)) if i not in paired]
        if pairs:
            encoded = self.encode_pairs([samples[i].prompt for i in pairs], [samples[i].response for i in pairs])
            for i, e in zip(pairs, encoded):
                ids[i] = e
        chats = [i for i in texts if self.cfg.spec.chat_template and _is_conversation(samples[i])]
        if chats:
            try:
                encoded = self.encode_conversations([samples[i] for i in chats])
            except TemplateRefused as e:
                raise TemplateRefused(e.reason, chats[e.index]) from None
            for i, e in zip(chats, encoded):
                ids[i] = e
            texts = [i for i in texts if ids[i] is None]
        if texts:
            encoded = self.encode_texts([self.format_text(samples[i]) for i in texts])
            for i, e in zip(texts, encoded):
                ids[i] = e
        return ids

    def encode_conversations(self, samples: list[Sample]) -> list[list[int]]:
        """Conversations rendered by the chat template, then tokenized: without the tokenizer's
        special tokens when the text already starts with BOS, with them otherwise (templates.py)."""
        if self.chat_template is None:
            raise MinirmError(f"{self.source}: this {self.cfg.family} model reads conversations through its "
                              "tokenizer's chat template, and the tokenizer has none (no chat_template.jinja, no "
                              "chat_template in tokenizer_config.json); pass --tokenizer the model's own tokenizer, "
                              "or give rows of formatted 'text'")
        rendered, conversations = [], []
        for i, sample in enumerate(samples):
            messages = sample.messages if sample.messages is not None else conversation(sample.history or [],
                                                                                        sample.response)
            try:
                rendered.append(self.chat_template.render(messages))
            except TemplateRefused as e:
                raise TemplateRefused(e.reason, i) from None
            conversations.append(messages)
        # longer than max_length: the oldest turns go first, then the start
        return [self._fit_by_turns(messages, ids) if cut else ids
                for messages, (ids, cut) in zip(conversations, self._encode_rendered(rendered))]

    def cut_note(self) -> str | None:
        """One line on what max_length cut so far, or None."""
        if not self.cut:
            return None
        parts = [f"{n} lost their oldest turns" if what == "turns" else f"{n} were cut from the {self.truncation_side}"
                 for what, n in sorted(self.cut.items(), reverse=True)]
        return (f"{sum(self.cut.values())} texts were longer than --max-length {self.max_length} tokens: "
                + " and ".join(parts))

    def format_text(self, sample: Sample) -> str:
        if sample.messages is not None:
            raise MinirmError(f"a 'messages' conversation needs a model that reads a chat template; this "
                              f"{self.cfg.family} model does not: give 'prompt' and 'response' instead")
        if self.pair_input or sample.history is None:
            return sample.response if sample.prompt is None else sample.prompt + "\n" + sample.response
        return pygmalion_text(sample.history, sample.response, **self.chat_names)


def usable_positions(cfg: ModelConfig) -> int:
    """The longest input the model reads: its position table, less what its family reserves
    (RoBERTa's fairseq numbering), or no hard limit (DeBERTa with relative positions only)."""
    return cfg.spec.usable_positions(cfg)


def pad_token_id(tokenizer: Tokenizer, cfg: ModelConfig) -> int:
    if cfg.pad_token_id is not None:
        return cfg.pad_token_id
    for token in ("[PAD]", "<pad>", "<|endoftext|>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return 0


def load_tokenizer(tokenizer_dir: str | Path, cfg: ModelConfig, max_length: int | None = None,
                   truncation_side: str | None = None, chat_names: dict | None = None) -> RewardTokenizer:
    folder = Path(tokenizer_dir)
    source = next((str(folder / f) for f in TOKENIZER_VOCABS if (folder / f).is_file()), str(folder))
    template = None
    if cfg.spec.chat_template:
        options = _tokenizer_config(folder)
        text = read_chat_template(folder, options)
        if text is not None:
            template = ChatTemplate(text, special_tokens(options, folder), str(folder))
    return RewardTokenizer(read_tokenizer(folder, cfg), cfg, max_length, truncation_side, chat_names, source,
                           chat_template=template)


def _is_conversation(sample: Sample) -> bool:
    """A pair, a transcript or a messages row: something a chat template formats (a text is not)."""
    return sample.messages is not None or sample.prompt is not None


def find_tokenizer(tokenizer: str | None, model_dir: Path, cfg: ModelConfig) -> Path:
    """The tokenizer's folder: --tokenizer if given, else the checkpoint's own, else its family's
    base tokenizer (CHAI's GPT-2 repo ships none; its card loads 'gpt2')."""
    if tokenizer is not None:
        return resolve_model(tokenizer, files="tokenizer")
    if has_tokenizer(model_dir):
        return model_dir
    base = cfg.spec.base_tokenizer
    if base is None:
        raise MinirmError(f"{model_dir}: ships no tokenizer; pass --tokenizer DIR_OR_REPO")
    try:
        return resolve_model(base, files="tokenizer")
    except MinirmError as e:
        raise MinirmError(f"{model_dir} ships no tokenizer, and its family's tokenizer {base} could not be "
                          f"loaded ({e}); pass --tokenizer DIR_OR_REPO") from None


def has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in TOKENIZER_VOCABS)


def read_tokenizer(folder: Path, cfg: ModelConfig) -> Tokenizer:
    """tokenizer.json if present; else rebuild it from vocab.txt or vocab.json + merges.txt."""
    if (folder / "tokenizer.json").is_file():
        try:
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # noqa: BLE001 - the Rust side raises a bare Exception
            raise MinirmError(f"{folder / 'tokenizer.json'}: cannot be read ({e}); re-download it") from None
        if tok.get_vocab_size(with_added_tokens=False) == 0:
            raise MinirmError(f"{folder / 'tokenizer.json'}: its vocabulary is empty, so every text would "
                              "tokenize to nothing; re-download it, or pass --tokenizer DIR_OR_REPO")
        return tok
    options = _tokenizer_config(folder)
    if (folder / "vocab.txt").is_file():
        # transformers' BertTokenizer lowercases unless told otherwise
        return _wordpiece(folder / "vocab.txt", lowercase=options.get("do_lower_case", True))
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return _byte_level_bpe(folder, with_roberta_specials=cfg.spec.roberta_specials)
    if (folder / "spm.model").is_file() and cfg.spec.spm:
        return _deberta_spm(folder / "spm.model", options)
    raise MinirmError(
        f"{folder}: no tokenizer (tokenizer.json, vocab.txt, vocab.json + merges.txt, or a DeBERTa spm.model); "
        "pass --tokenizer DIR_OR_REPO"
    )


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MinirmError(f"{path}: not valid JSON ({e})") from None


def _wordpiece(vocab_file: Path, lowercase: bool) -> Tokenizer:
    """BERT's tokenizer from vocab.txt: clean, split on whitespace and punctuation, WordPiece."""
    tok = Tokenizer(models.WordPiece.from_file(str(vocab_file), unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def _byte_level_bpe(folder: Path, with_roberta_specials: bool) -> Tokenizer:
    """GPT-2 / RoBERTa byte-level BPE from vocab.json + merges.txt."""
    tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if with_roberta_specials:
        # transformers' order (bos, eos, unk, pad, mask), so new ids match when the vocab lacks them
        tok.add_special_tokens(["<s>", "</s>", "<unk>", "<pad>", "<mask>"])
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
            trim_offsets=True, add_prefix_space=False,
        )
    else:
        tok.add_special_tokens(["<|endoftext|>"])
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _deberta_spm(path: Path, options: dict) -> Tokenizer:
    """DeBERTa-v2's tokenizer from spm.model alone, built as transformers' DebertaV2Tokenizer
    builds it (5.25): the SentencePiece unigram pieces and scores; the file's own normalization
    (its precompiled charsmap, as SentencePiece applies it), then a right strip and runs of
    spaces to one; "▁" before every word; [CLS] A [SEP] B [SEP]. A file without a charsmap gets
    whitespace runs, tabs and newlines to one space, NFC and a right strip. (transformers 5.23
    and older ignored the charsmap, so full-width punctuation such as "，" became [UNK] where
    SentencePiece itself, which the model was trained with, reads ",".) Control and
    user-defined pieces are matched whole in the raw text, as transformers adds them as tokens."""
    spm = read_spm(path)
    if spm.model_type != UNIGRAM:
        raise MinirmError(f"{path}: a SentencePiece model of type {spm.model_type}, not unigram; "
                          "pass --tokenizer a directory with a tokenizer.json")

    def special(name: str, default: str) -> str:
        value = options.get(name, default)
        return value.get("content", default) if isinstance(value, dict) else str(value or default)

    cls, sep, unk = special("cls_token", "[CLS]"), special("sep_token", "[SEP]"), special("unk_token", "[UNK]")
    pad, mask = special("pad_token", "[PAD]"), special("mask_token", "[MASK]")
    vocab = [(piece, score) for piece, score, _ in spm.pieces]
    # transformers takes the unk piece by name (scored 0, as SentencePiece scores it), else the file's unk_id
    unk_id = vocab.index((unk, 0.0)) if (unk, 0.0) in vocab else spm.unk_id
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    norm = [normalizers.Lowercase()] if options.get("do_lower_case", False) else []
    if spm.precompiled_charsmap:
        norm += [normalizers.Precompiled(spm.precompiled_charsmap), normalizers.Strip(left=False, right=True),
                 normalizers.Replace(Regex(r" {2,}"), " ")]
    else:
        norm += [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
                 normalizers.Strip(left=False, right=True)]
    tok.normalizer = normalizers.Sequence(norm)
    scheme = "always" if options.get("add_prefix_space", True) else "first"
    pre = [pre_tokenizers.Punctuation(behavior="isolated")] if options.get("split_by_punct", False) else []
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre + [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (pad, cls, sep, unk, mask)])
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p, _, kind in spm.pieces if kind == CONTROL])
    tok.add_tokens([AddedToken(p, special=False, normalized=False) for p, _, kind in spm.pieces if kind == USER_DEFINED])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return tok
