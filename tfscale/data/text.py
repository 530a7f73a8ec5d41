"""Text: standardization and a Keras TextVectorization adapted on a sample, as pipeline transforms.

    reviews = ts.data.csv("reviews.csv", label="stars").standardize(key="text")
    reviews = reviews.vectorize(max_tokens=20000, output_sequence_length=200, key="text")
    model_vocab = reviews.vectorizer.get_vocabulary()
"""

from __future__ import annotations

import logging

import tensorflow as tf

from tfscale.data.core import Op
from tfscale.errors import ConfigError

log = logging.getLogger("tfscale")

_PUNCTUATION = r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]"


def standardize_text(text: tf.Tensor, *, lower: bool = True, strip_punctuation: bool = True,
                     strip_html: bool = True) -> tf.Tensor:
    """Lower-cases, removes HTML tags and punctuation, and collapses spaces (works on any shape)."""
    if lower:
        text = tf.strings.lower(text, encoding="utf-8")
    if strip_html:
        text = tf.strings.regex_replace(text, r"<[^>]{0,200}>", " ")
    if strip_punctuation:
        text = tf.strings.regex_replace(text, _PUNCTUATION, " ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def _text_map(fn, key):
    def mapped(*args):
        element = args if len(args) > 1 else args[0]
        if isinstance(element, dict):
            return {**element, key: fn(element[key])}
        if isinstance(element, tuple):
            i = 0 if key is None else key
            return element[:i] + (fn(element[i]),) + element[i + 1:]
        return fn(element)

    return mapped


def _vector_op(name, fn, payload=None) -> Op:
    def apply(ds, build):
        return ds.map(fn, **build.map_options)

    return Op(name, apply, vectorized=True, payload=payload, fn=fn)


class TextMethods:
    """Text transforms of `Pipeline` (a mixin)."""

    def standardize(self, *, key=None, lower: bool = True, strip_punctuation: bool = True, strip_html: bool = True):
        """Standardizes a text field: lower case, no HTML tags or punctuation, single spaces; per batch.

        Args:
            key: the text's dict key or tuple index (default: the element, or item 0 of a tuple).
        """
        fn = _text_map(lambda t: standardize_text(t, lower=lower, strip_punctuation=strip_punctuation,
                                                  strip_html=strip_html), key)
        return self.then(_vector_op("standardize", fn))

    def vectorize(self, *, max_tokens: int | None = 20000, output_sequence_length: int | None = None,
                  output_mode: str = "int", sample: int = 10000, key=None, ngrams: int | None = None):
        """Turns text into token ids with a `keras.layers.TextVectorization` adapted on the first `sample` texts.

        The layer (also `pipeline.vectorizer`) can be put in front of a model for serving.

        Args:
            max_tokens: vocabulary size (None: all tokens seen).
            output_sequence_length: pad/cut to this many tokens ("int" mode).
            output_mode: "int", "multi_hot", "count" or "tf_idf".
            sample: texts read to build the vocabulary.
            key: the text's dict key or tuple index.
            ngrams: add n-grams up to this length.
        """
        import keras

        if sample < 1:
            raise ConfigError(f"sample must be >= 1, got {sample}", where="vectorize(sample=...)",
                              fix="give how many texts to learn the vocabulary from")
        layer = keras.layers.TextVectorization(max_tokens=max_tokens, output_mode=output_mode, ngrams=ngrams,
                                               output_sequence_length=output_sequence_length, standardize=None)
        texts = self.dataset().map(lambda *e: _pick(e[0] if len(e) == 1 else e, key)).take(sample)
        layer.adapt(texts.batch(512))
        log.info("vectorize: %d tokens learned from up to %d texts", layer.vocabulary_size(), sample)

        def apply_layer(t):
            single = t.shape.rank == 0
            out = layer(t[None] if single else t)
            return out[0] if single else out

        return self.then(_vector_op("vectorize", _text_map(apply_layer, key), payload=layer))

    @property
    def vectorizer(self):
        """The TextVectorization layer of the last `vectorize()` step (None if there is none)."""
        layers = [op.payload for op in self.ops if op.name == "vectorize"]
        return layers[-1] if layers else None


def _pick(element, key):
    if isinstance(element, dict):
        return element[key]
    if isinstance(element, tuple):
        return element[0 if key is None else key]
    return element
