"""Reading a SentencePiece model file (spm.model) without the protobuf or sentencepiece packages.

Some checkpoints ship only spm.model for their tokenizer: microsoft/deberta-v2-xxlarge, the
oa-deberta recipe's base model, is one. The file is a serialized `ModelProto` message
(sentencepiece_model.proto). minirm needs four things from it:

    ModelProto   field 1: repeated SentencePiece pieces
                   SentencePiece field 1: piece (string), 2: score (float32), 3: type (enum)
                 field 2: TrainerSpec trainer_spec
                   field 3: model_type (1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR), field 40: unk_id
                 field 3: NormalizerSpec normalizer_spec
                   field 2: precompiled_charsmap (bytes): the normalization SentencePiece applies
                   before it splits (NFKC by default: full-width "，" becomes ","), compiled

Protobuf's wire format is a sequence of (tag, value) records; tag = field_number << 3 | wire
type, where wire type 0 is a varint, 1 eight bytes, 2 a length-prefixed byte string and 5 four
bytes. Fields this reader does not need are skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import MinirmError

# SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM = 1


@dataclass
class SentencePieceModel:
    pieces: list[tuple[str, float, int]]  # (piece, score, type), in id order
    model_type: int = UNIGRAM
    unk_id: int = 0
    precompiled_charsmap: bytes = b""  # empty: the model was trained without normalization rules


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each record of one message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        yield field, value


def read_spm(path: Path) -> SentencePieceModel:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MinirmError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        model = SentencePieceModel(pieces=[])
        for field, value in _fields(data):
            if field == 1:  # a SentencePiece
                piece, score, kind = "", 0.0, NORMAL
                for f, v in _fields(value):
                    if f == 1:
                        piece = v.decode("utf-8")
                    elif f == 2:
                        score = struct.unpack("<f", v)[0]
                    elif f == 3:
                        kind = v
                model.pieces.append((piece, score, kind))
            elif field == 2:  # the TrainerSpec
                for f, v in _fields(value):
                    if f == 3:
                        model.model_type = v
                    elif f == 40:
                        model.unk_id = v
            elif field == 3:  # the NormalizerSpec
                for f, v in _fields(value):
                    if f == 2:
                        model.precompiled_charsmap = bytes(v)
    except (ValueError, IndexError, UnicodeDecodeError, struct.error, AttributeError) as e:
        raise MinirmError(f"{path}: not a valid SentencePiece model ({e}); re-download it") from None
    if not model.pieces:
        raise MinirmError(f"{path}: a SentencePiece model with no pieces; re-download it")
    return model
