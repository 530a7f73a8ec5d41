"""The sentiment model: one Keras 3 definition, trained on any strategy and exported to int8 TFLite.

It takes int32 token ids (see tweets.py for why text becomes ids outside the
model) and returns the probabilities of (negative, positive). Every layer
maps to a TFLite builtin with an int8 kernel: Embedding → GATHER,
Conv1D → CONV_2D, GlobalMaxPooling1D → REDUCE_MAX (MAX in TFLite), Dense →
FULLY_CONNECTED, softmax → SOFTMAX; Dropout disappears at inference.
"""

from __future__ import annotations

import keras


def build_model(vocab_size: int, sequence_length: int, *, embedding_dim: int = 32, filters: int = 64,
                kernel_size: int = 3, dropout: float = 0.3) -> keras.Model:
    """A small text CNN over token ids.

    Args:
        vocab_size: rows of the embedding (the TextVectorization vocabulary, padding and OOV included).
        sequence_length: token ids per message (padded or cut by the vectorizer).
        embedding_dim: width of each token's vector.
        filters: Conv1D filters, i.e. n-gram detectors.
        kernel_size: n-gram width.
        dropout: dropout rate before the classifier (training only).

    Returns:
        An uncompiled model: (batch, sequence_length) int32 → (batch, 2) probabilities.
    """
    ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(ids)
    x = keras.layers.Conv1D(filters, kernel_size, padding="same", activation="relu", name="ngrams")(x)
    x = keras.layers.GlobalMaxPooling1D(name="strongest")(x)
    x = keras.layers.Dropout(dropout)(x)
    probs = keras.layers.Dense(2, activation="softmax", name="sentiment")(x)
    return keras.Model(ids, probs, name="tweet_cnn")
