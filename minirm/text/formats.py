"""Turning records into the text a model was trained to read.

Pair models (BERT, RoBERTa, DeBERTa) take (prompt, response) as a tokenizer pair and need
no formatting. CHAI's GPT-2 model reads one text in the Pygmalion chat format, as the
chaiverse PygmalionFormatter writes it:

    {bot_name}'s Persona: {memory}
    ####
    {scenario}
    <START>
    {user_name}: {message}
    {bot_name}: {message}
    ...
    {bot_name}: {response}

with only the last 10 messages of the history kept. The model card's response template
ends the context with "{bot_name}:"; the reply being scored follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGES = 10


@dataclass
class ChatTurn:
    speaker: str  # "user" or "bot"
    message: str


def pygmalion_context(history: list[ChatTurn], bot_name: str = "Bot", user_name: str = "User",
                      memory: str = "", scenario: str = "", max_messages: int = MAX_MESSAGES) -> str:
    """The conversation so far, ending with '{bot_name}:' for the reply to follow.

    `memory` is the bot's persona and `scenario` the formatter's "prompt" field (the scene);
    like chaiverse's formatter, both templates are always written, even when empty.
    """
    parts = [f"{bot_name}'s Persona: {memory}\n####\n", f"{scenario}\n<START>\n"]
    for turn in history[-max_messages:] if max_messages > 0 else []:
        name = bot_name if turn.speaker == "bot" else user_name
        parts.append(f"{name}: {turn.message}\n")
    parts.append(f"{bot_name}:")
    return "".join(parts)


def pygmalion_text(history: list[ChatTurn], response: str, **names) -> str:
    """Context plus the bot reply being scored."""
    return pygmalion_context(history, **names) + " " + response


def chat_text(prompt: str, response: str, **names) -> str:
    """A single-exchange (prompt, response) in the Pygmalion format."""
    return pygmalion_text([ChatTurn("user", prompt)], response, **names)
