"""Byte-level text for the GPT proxy tasks: a UTF-8 file from disk, or generated text.

Every text dataset comes back as the same :class:`TextData`: uint8 byte tensors (the vocabulary is the
256 byte values, so any UTF-8 file needs no tokenizer) for a train and a validation split, and the
``context`` the network reads. A file is split by position (the last ``val_fraction`` is validation),
so no validation sentence is also a training sentence. Nothing is downloaded and nothing unpickled.

The generated text (:func:`generate_text`) is a stand-in for a corpus on CPU, built so that a small
model learns it within a few hundred steps and attention pays. Each line is a *sentence* of 3–5 words
and then the same sentence copied: ``"bo kuzi ta|bo kuzi ta\\n"``. The words (24, of 2–5 letters) and
their grammar (each word is followed by one of 3 words) are drawn per seed. What is learnable:

- inside a word, the letters after the first (the word is known from its first letters);
- the first letter of the next word, to one of 3 successors (a guess right about 1 time in 3);
- the whole copy after the ``|``, exactly: it repeats the first half, which an attention head that
  looks back one sentence can read (an induction head), and no n-gram model of a few bytes can.

A bigram model (the most frequent byte after each byte, fitted on the train split) gets 0.34–0.40 of
next bytes right (seeds 0–2, :func:`bigram_accuracy`; a unigram model 0.16–0.17), since it knows
neither which word it is in nor what the first half said. The ``generated_gpt`` task's GPT (two
blocks) with LayerNorm gets 0.77 after 300 steps: it has learnt the words and much of the copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from evosearch.errors import DatasetError

VOCAB_SIZE = 256  # byte-level: one token per byte value

GENERATED_WORDS = 24
GENERATED_WORD_LENGTHS = (2, 5)  # shortest and longest word, in letters
GENERATED_SUCCESSORS = 3  # the words that may follow a word
GENERATED_SENTENCE_WORDS = (3, 5)  # fewest and most words of a sentence
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class TextData:
    """A train and a validation split of bytes (uint8, 1-D), and the ``context`` (tokens a sequence)
    the network reads. Both splits hold at least one sequence of ``context`` tokens and its next token."""

    name: str
    train_tokens: torch.Tensor = field(repr=False)
    val_tokens: torch.Tensor = field(repr=False)
    context: int

    def __post_init__(self) -> None:
        for split in (self.train_tokens, self.val_tokens):
            if split.dtype != torch.uint8 or split.dim() != 1:
                raise ValueError(f"tokens must be uint8 and 1-D, got {split.dtype} {tuple(split.shape)}")
            if len(split) < self.context + 1:
                raise ValueError(
                    f"a split of {len(split)} tokens is shorter than context + 1 ({self.context + 1})"
                )

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE


def read_text(path: str | Path, context: int, val_fraction: float = 0.1) -> TextData:
    """A UTF-8 file as bytes, its last ``val_fraction`` the validation split; :class:`DatasetError`
    for a missing file, one that is not UTF-8, or one too short for ``context``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"text file not found: {path} (dataset.path must name a UTF-8 text file)")
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path} is not UTF-8 text: byte {e.start} is {raw[e.start]:#04x} ({e.reason}); "
            "convert it to UTF-8 first"
        ) from None
    val_bytes = round(len(raw) * val_fraction)
    shortest = min(len(raw) - val_bytes, val_bytes)
    if shortest < context + 1:
        needed = (context + 1) * max(1 / val_fraction, 1 / (1 - val_fraction))
        raise DatasetError(
            f"{path} is too short: {len(raw)} bytes leave a split of {shortest}, less than context + 1 "
            f"({context + 1}); at this val_fraction ({val_fraction:g}) it needs about {needed:.0f} bytes "
            "(or a shorter dataset.context)"
        )
    return _split("text", raw, len(raw) - val_bytes, context)


def generated_text_data(train_size: int, val_size: int, seed: int, context: int) -> TextData:
    """``train_size`` + ``val_size`` bytes of :func:`generate_text` from ``seed``, split by position."""
    if min(train_size, val_size) < context + 1:
        raise DatasetError(
            f"dataset generated_text: train_size {train_size} and val_size {val_size} must each be at "
            f"least context + 1 ({context + 1}) bytes"
        )
    return _split("generated_text", generate_text(train_size + val_size, seed), train_size, context)


def generate_text(size: int, seed: int) -> bytes:
    """``size`` bytes of the generated language (see the module docstring), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    words = _dictionary(rng)
    successors = rng.integers(0, len(words), (len(words), GENERATED_SUCCESSORS))
    lines: list[str] = []
    length = 0
    while length < size:
        count = rng.integers(GENERATED_SENTENCE_WORDS[0], GENERATED_SENTENCE_WORDS[1] + 1)
        index = [int(rng.integers(len(words)))]
        for _ in range(count - 1):
            index.append(int(successors[index[-1], rng.integers(GENERATED_SUCCESSORS)]))
        sentence = " ".join(words[i] for i in index)
        lines.append(f"{sentence}|{sentence}\n")
        length += len(lines[-1])
    return "".join(lines).encode("ascii")[:size]


def _dictionary(rng: np.random.Generator) -> list[str]:
    """``GENERATED_WORDS`` distinct lowercase words of the generated lengths."""
    words: dict[str, None] = {}
    low, high = GENERATED_WORD_LENGTHS
    while len(words) < GENERATED_WORDS:
        letters = rng.integers(0, len(LETTERS), rng.integers(low, high + 1))
        words["".join(LETTERS[i] for i in letters)] = None
    return list(words)


def bigram_accuracy(train: torch.Tensor, val: torch.Tensor) -> float:
    """Next-byte accuracy on ``val`` of the most frequent successor of each byte in ``train``: the
    baseline a model must beat to have used more than the previous byte."""
    counts = torch.zeros(VOCAB_SIZE, VOCAB_SIZE, dtype=torch.int64)
    pairs = train[:-1].long() * VOCAB_SIZE + train[1:].long()
    counts.view(-1).index_add_(0, pairs, torch.ones_like(pairs))
    guess = counts.argmax(dim=1)
    return (guess[val[:-1].long()] == val[1:].long()).float().mean().item()


def unigram_accuracy(train: torch.Tensor, val: torch.Tensor) -> float:
    """Next-byte accuracy on ``val`` of always guessing ``train``'s most frequent byte."""
    return (val == torch.bincount(train.long(), minlength=VOCAB_SIZE).argmax()).float().mean().item()


def _split(name: str, raw: bytes, train_bytes: int, context: int) -> TextData:
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return TextData(name, tokens[:train_bytes], tokens[train_bytes:], context)
