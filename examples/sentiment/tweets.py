"""The labelled tweets, their train/held-out split, and the tokenizer shared by training and serving.

Text reaches the model in two steps:

1. `normalize` (plain Python, this file): HTML entities decoded, links and
   user names replaced by ``<url>`` / ``<user>``, emoticons such as ``:-)``
   kept whole, words lower-cased; the result is the tokens joined by spaces.
2. Token ids: in training, a `keras.layers.TextVectorization` layer
   (``standardize=None, split="whitespace"``) adapted on the training tweets
   maps the normalized text to ids inside the tf.data pipeline. In serving,
   `Vocabulary.encode` does the same lookup in NumPy from the vocabulary the
   layer learned, so the Celery workers need neither TensorFlow nor string
   ops inside the TFLite model (int8 TFLite with builtin ops only has no
   string kernels: RegexReplace, StringSplit and the lookup table would need
   SELECT_TF_OPS, which mobile and edge LiteRT runtimes lack).

tests/test_examples_sentiment.py checks that both paths give the same ids.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
from pathlib import Path

import numpy as np

PAD, OOV = "", "[UNK]"  # TextVectorization's reserved tokens, ids 0 and 1
LABELS = ("negative", "positive")

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_USER = re.compile(r"@\w+")
_EMOTICON = r"(?<!\d)(?:[:;=8][\-o*']?[)\](\[dDpP/\\|@3]|[)\](\[dDpP/\\|@3][\-o*']?[:;=8]|<3)(?!\d)"
_TOKEN = re.compile(rf"<url>|<user>|{_EMOTICON}|[a-z0-9]+(?:'[a-z]+)?|[!?]+|[^\sa-z0-9]", re.IGNORECASE)
_KEEP_CASE = re.compile(rf"^(?:{_EMOTICON})$")  # ":D" and ":d" differ; words do not


@dataclasses.dataclass(frozen=True)
class Tweet:
    """One human-rated tweet: its id, mean rating in [-4, 4], text and binary label (1 = positive)."""

    id: int
    score: float
    text: str

    @property
    def label(self) -> int:
        return int(self.score > 0)


def load(path: str | os.PathLike) -> list[Tweet]:
    """The tweets with a non-zero mean rating (4,196 of 4,200), in file order.

    Args:
        path: ``tweets_GroundTruth.txt`` as written by fetch_data.py (id, rating, text; tab separated).
    """
    tweets = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"{path}:{number}: expected 3 tab-separated fields, found {len(parts)}")
        tweet = Tweet(int(parts[0]), float(parts[1]), parts[2].strip())
        if tweet.score != 0:
            tweets.append(tweet)
    return tweets


def split(tweets: list[Tweet], held_out: float = 0.2, seed: int = 0) -> tuple[list[Tweet], list[Tweet]]:
    """A seeded (train, held-out) split; the same on every worker and every run."""
    order = np.random.RandomState(seed).permutation(len(tweets))
    n_held = int(round(len(tweets) * held_out))
    return [tweets[i] for i in order[n_held:]], [tweets[i] for i in order[:n_held]]


def normalize(text: str) -> str:
    """The tweet's tokens joined by single spaces (see the module docstring).

    Example:
        >>> normalize("@bob LOVED it!!! :-) http://t.co/x")
        "<user> loved it !!! :-) <url>"
    """
    text = _USER.sub(" <user> ", _URL.sub(" <url> ", html.unescape(text)))
    tokens = _TOKEN.findall(text)
    return " ".join(t if _KEEP_CASE.match(t) else t.lower() for t in tokens)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token → id mapping of a TextVectorization layer, usable without TensorFlow.

    Args:
        tokens: ``layer.get_vocabulary()``: "" (padding, id 0), "[UNK]" (id 1), then by frequency.
        sequence_length: the layer's ``output_sequence_length``: ids are padded or cut to it.
    """

    tokens: tuple[str, ...]
    sequence_length: int

    def __post_init__(self):
        if self.tokens[:2] != (PAD, OOV):
            raise ValueError(f"a vocabulary starts with {PAD!r}, {OOV!r}; got {self.tokens[:2]}")
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    @property
    def size(self) -> int:
        return len(self.tokens)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Token ids, shape (len(texts), sequence_length), int32: what the TFLite model takes."""
        ids = np.zeros((len(texts), self.sequence_length), dtype=np.int32)
        lookup = self._ids
        for row, text in enumerate(texts):
            tokens = normalize(text).split()[: self.sequence_length]
            ids[row, : len(tokens)] = [lookup.get(t, 1) for t in tokens]
        return ids

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"sequence_length": self.sequence_length, "tokens": list(self.tokens)}),
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(tuple(data["tokens"]), int(data["sequence_length"]))
