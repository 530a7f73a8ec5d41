"""The models quantization is tested and benchmarked on: small, seeded, trained briefly on real data.

Each builder returns a `Trained`: the model (compiled, trained), evaluation data
``(x, y)`` and calibration inputs ``x`` drawn from the training split (never the
evaluation one). Used by tests/test_export_keras_modes.py (and the per-layer and
mixed-precision tests) and by benchmarks/bench_quantize.py.

- `digits`: the demo's conv net (`tfscale.recipes.digits.build_model`) on
  scikit-learn's 1,797 bundled digits, its stratified split.
- `cnn`: the conv net tests/test_export.py converts (Conv2D 8, Dense 32, Dense 10,
  logits) on the same digits, split as that file splits them.
- `transformer`: a text classifier of keras-hub layers in a tiny configuration
  (a token `Embedding` over a vocabulary built from the training tweets plus a
  keras-hub `PositionEmbedding`,
  two `TransformerEncoder` blocks, mean pooling, a softmax head), randomly
  initialized (nothing downloaded), trained on the 4,196 rated tweets of the
  sentiment example (examples/sentiment: the vaderSentiment 3.3.2 sdist's file,
  fetched once into ~/.cache/tfscale/sentiment or $TFSCALE_CACHE). Token ids:
  that example's `tweets.normalize`, then a frequency vocabulary (0 padding,
  1 unknown). `blocks(model)` gives its Keras GPTQ/AWQ structure (the embedding,
  then the encoder blocks in order).

Each call trains afresh (seconds on 2 cores); share the result in a module fixture.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from pathlib import Path

import keras
import numpy as np

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sentiment"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

import fetch_data  # noqa: E402  (examples/sentiment)
import tweets  # noqa: E402

SEED = 0
SEQUENCE_LENGTH = 32
VOCABULARY = 2000  # ids: 0 padding, 1 unknown, then the 1,998 most frequent training tokens
HIDDEN, FFN, HEADS, BLOCKS = 64, 128, 2, 2


@dataclasses.dataclass
class Trained:
    """A trained model with its data.

    Attributes:
        name: "digits", "cnn" or "transformer".
        model: the compiled, trained Keras model.
        eval_data: (x, y) held-out examples.
        calibration: training inputs (x only), for int8 calibration and GPTQ/AWQ.
        train_data: (x, y) the training split.
    """

    name: str
    model: keras.Model
    eval_data: tuple[np.ndarray, np.ndarray]
    calibration: np.ndarray
    train_data: tuple[np.ndarray, np.ndarray]


def _fit(model: keras.Model, x, y, epochs: int, batch_size: int = 64, from_logits: bool = False) -> keras.Model:
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return model


def digits(epochs: int = 8) -> Trained:
    """The demo's digits conv net (about 40k parameters), trained on its 80% split."""
    from tfscale.recipes import digits as recipe

    x_train, y_train, x_test, y_test = recipe.load()
    keras.utils.set_random_seed(SEED)
    model = _fit(recipe.build_model(), x_train, y_train, epochs)
    return Trained("digits", model, (x_test, y_test), x_train[:200], (x_train, y_train))


def cnn(epochs: int = 5) -> Trained:
    """tests/test_export.py's conv net (logits), on its split: first 1,400 digits to train, the rest to evaluate."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int32")
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)], name="digits")
    _fit(model, x[:1400], y[:1400], epochs, from_logits=True)
    return Trained("cnn", model, (x[1400:], y[1400:]), x[:200], (x[:1400], y[:1400]))


def vocabulary(texts: list[str], size: int = VOCABULARY) -> dict[str, int]:
    """Token → id for the `size` - 2 most frequent normalized tokens of `texts` (ties: first seen)."""
    counts = collections.Counter(t for text in texts for t in tweets.normalize(text).split())
    return {token: i + 2 for i, (token, _) in enumerate(counts.most_common(size - 2))}


def encode(texts: list[str], ids: dict[str, int], length: int = SEQUENCE_LENGTH) -> np.ndarray:
    """(len(texts), length) int32 token ids: 0 pads, 1 is an unknown token."""
    out = np.zeros((len(texts), length), np.int32)
    for row, text in enumerate(texts):
        tokens = tweets.normalize(text).split()[:length]
        out[row, :len(tokens)] = [ids.get(t, 1) for t in tokens]
    return out


def build_transformer(vocabulary_size: int = VOCABULARY, sequence_length: int = SEQUENCE_LENGTH) -> keras.Model:
    """The tiny keras-hub text classifier: int32 token ids (batch, sequence_length) → (batch, 2) probabilities."""
    import keras_hub

    ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    tokens = keras.layers.Embedding(vocabulary_size, HIDDEN, name="token_embedding")(ids)
    positions = keras_hub.layers.PositionEmbedding(sequence_length, name="position_embedding")(tokens)
    x = keras.layers.Add(name="embedding")([tokens, positions])
    for i in range(BLOCKS):
        x = keras_hub.layers.TransformerEncoder(FFN, HEADS, dropout=0.1, name=f"encoder_{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    probs = keras.layers.Dense(2, activation="softmax", name="sentiment")(x)
    return keras.Model(ids, probs, name="tweet_transformer")


def tweet_texts() -> tuple[list[tweets.Tweet], list[tweets.Tweet]]:
    """The example's (train, held-out) split of the rated tweets (3,357 / 839); fetched once per machine."""
    return tweets.split(tweets.load(fetch_data.fetch()))


def transformer(epochs: int = 3) -> Trained:
    """The tiny transformer, trained on the training tweets; evaluated on the 839 held-out ones."""
    train, held_out = tweet_texts()
    ids = vocabulary([t.text for t in train])
    x_train, y_train = encode([t.text for t in train], ids), np.array([t.label for t in train], np.int32)
    x_test, y_test = encode([t.text for t in held_out], ids), np.array([t.label for t in held_out], np.int32)
    keras.utils.set_random_seed(SEED)
    model = _fit(build_transformer(), x_train, y_train, epochs, batch_size=32)
    return Trained("transformer", model, (x_test, y_test), x_train[:256], (x_train, y_train))


BUILDERS = {"digits": digits, "cnn": cnn, "transformer": transformer}


def blocks(model: keras.Model) -> dict:
    """Keras' GPTQ/AWQ layer structure of `build_transformer`'s model: the embedding, then the encoder blocks."""
    embed = keras.Model(model.inputs, model.get_layer("embedding").output)
    return {"pre_block_layers": [embed],
            "sequential_blocks": [model.get_layer(f"encoder_{i}") for i in range(BLOCKS)]}
