"""OpenAssistant's ranking convention for its DeBERTa reward model (`oa-deberta`).

OpenAssistant scored generations with theblackcat102/deberta-v2-xxlarge-rm through a
`rank_model_fn` that receives one string per sample, "prompt[SEP]response", and:

  1. splits the text at "[SEP]" into a prefix (the prompt) and a postfix (the response);
  2. gives an empty or near-empty response, one made of fewer than 4 distinct
     characters, the fixed score -4 without running the model;
  3. otherwise scores tokenizer(prefix, postfix) as a pair (token types dropped) and
     takes logit 0.

The functions here are that rule and nothing else, so score.py's `--oa-rank` option and
any other caller apply it the same way. Nothing is stripped: whitespace counts as a
character, as it does in `len(set(postfix))`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..errors import MinirmError

SEPARATOR = "[SEP]"
EMPTY_RESPONSE_SCORE = -4.0
MIN_DISTINCT_CHARS = 4


def split_oa_text(text: str) -> tuple[str, str]:
    """"prompt[SEP]response" -> (prefix, postfix), split at the first "[SEP]".

    A response may itself contain "[SEP]"; only the first one separates. A text with no
    "[SEP]" at all is an error: there is no telling which part is the prompt.
    """
    prefix, sep, postfix = text.partition(SEPARATOR)
    if not sep:
        raise MinirmError(
            f"OpenAssistant ranking expects 'prompt[SEP]response', got a text with no [SEP]: {text[:60]!r}"
        )
    return prefix, postfix


def oa_empty_response(postfix: str) -> bool:
    """True when the response has fewer than 4 distinct characters (an empty or near-empty
    response: "", "ok", "....", "  \\n"); such a response scores -4 without the model."""
    return len(set(postfix)) < MIN_DISTINCT_CHARS


def oa_rank_scores(texts: Sequence[str], score_pairs: Callable[[list[str], list[str]], list[float]]) -> list[float]:
    """Score "prompt[SEP]response" texts by the rule above, in input order.

    `score_pairs(prompts, responses)` scores the pairs that are not near-empty, in one call
    (e.g. `Scorer.score_pairs`); near-empty responses get -4.0.
    """
    return oa_rank_pair_scores([split_oa_text(t) for t in texts], score_pairs)


def oa_rank_pair_scores(pairs: Sequence[tuple[str, str]],
                        score_pairs: Callable[[list[str], list[str]], list[float]]) -> list[float]:
    """The same rule for (prefix, postfix) pairs that are already split."""
    keep = [i for i, (_, post) in enumerate(pairs) if not oa_empty_response(post)]
    scores = [EMPTY_RESPONSE_SCORE] * len(pairs)
    if keep:
        got = score_pairs([pairs[i][0] for i in keep], [pairs[i][1] for i in keep])
        for i, s in zip(keep, got):
            scores[i] = float(s)
    return scores
