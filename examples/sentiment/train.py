"""Trains the tweet sentiment model under `Scale.auto()` and exports it to int8 TFLite.

The same script runs on a laptop and on a cluster:

    python examples/sentiment/fetch_data.py                      # once: the labelled tweets
    python examples/sentiment/train.py --out saved_models/sentiment
    tfscale launch -n 2 -- python examples/sentiment/train.py --out saved_models/sentiment

It writes, on the chief only, into --out:
    vocabulary.json         tokens and sequence length (what the Celery workers encode with)
    model.keras             the trained Keras model
    sentiment_int8.tflite   full-integer int8 TFLite, builtin ops only (input: int32 token ids)
    train_report.json       held-out accuracy of the Keras model and of the int8 TFLite file
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import tfscale as ts
from tfscale import quiet

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fetch_data  # noqa: E402
import tweets  # noqa: E402

log = logging.getLogger("sentiment")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="tweets_GroundTruth.txt (default: fetched into the cache by fetch_data.py)")
    p.add_argument("--out", default="saved_models/sentiment", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=4, help="passes over the training tweets (default: %(default)s)")
    p.add_argument("--global-batch-size", type=int, default=64,
                   help="examples per step over all replicas (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=2e-3,
                   help="Adam's rate at --global-batch-size 64 (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=10000,
                   help="vocabulary size, padding and OOV included (default: %(default)s)")
    p.add_argument("--sequence-length", type=int, default=40, help="token ids per message (default: %(default)s)")
    p.add_argument("--train-limit", type=int, default=0, help="train on the first N training tweets (0: all)")
    p.add_argument("--seed", type=int, default=0, help="split, shuffle and initialization seed (default: %(default)s)")
    return p.parse_args(argv)


def text_pipeline(train: list[tweets.Tweet], max_tokens: int, sequence_length: int, seed: int):
    """(token ids, label) examples as a `tfscale.data` pipeline, and its adapted TextVectorization layer.

    The texts are normalized in Python (tweets.normalize, the same function the
    Celery workers use), then the pipeline's `vectorize` adapts a
    TextVectorization layer (whitespace split, no further standardization) on
    them and maps each text to `sequence_length` int32 token ids.
    """
    import numpy as np
    import tensorflow as tf

    texts = np.array([tweets.normalize(t.text) for t in train], dtype=object)
    labels = np.array([t.label for t in train], dtype=np.int32)
    pipeline = ts.data.from_numpy(texts, labels).vectorize(max_tokens=max_tokens, sample=len(texts),
                                                          output_sequence_length=sequence_length)
    pipeline = pipeline.map(lambda ids, label: (tf.cast(ids, tf.int32), label)).cache()
    return pipeline.vectorizer, pipeline.shuffle(len(texts), seed=seed)


def train_model(scale: ts.Scale, examples, vocab_size: int, args: argparse.Namespace):
    """Builds, compiles and fits the model under `scale`; returns it."""
    import keras

    import textcnn

    train = scale.distribute(examples, global_batch_size=args.global_batch_size)
    keras.utils.set_random_seed(args.seed)
    with scale.scope():
        model = textcnn.build_model(vocab_size, args.sequence_length)
        model.compile(optimizer=scale.optimizer("adam", base_lr=args.learning_rate, base_batch_size=64),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    with warnings.catch_warnings():
        # A tfscale pipeline's length is known to Keras only after the first epoch, which it reports as
        # "ran out of data"; every epoch here reads the whole training split. The pipeline shuffles itself.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        model.fit(train, epochs=args.epochs, verbose=2 if scale.is_chief else 0, callbacks=scale.callbacks(),
                  shuffle=False)
    return model


def keras_accuracy(model, vocabulary: tweets.Vocabulary, held_out: list[tweets.Tweet]) -> float:
    """Held-out accuracy of the Keras model, called directly (no collective: the chief runs it alone)."""
    import numpy as np

    ids = vocabulary.encode([t.text for t in held_out])
    probs = np.concatenate([np.asarray(model(ids[i:i + 256], training=False)) for i in range(0, len(ids), 256)])
    return float(np.mean(probs.argmax(1) == np.array([t.label for t in held_out])))


def export(model, examples, vocabulary: tweets.Vocabulary, held_out: list[tweets.Tweet], out: Path) -> dict:
    """Chief only: writes the vocabulary, .keras and int8 TFLite files; returns the report."""
    import scoring

    out.mkdir(parents=True, exist_ok=True)
    vocabulary.save(out / "vocabulary.json")
    model.save(out / "model.keras")
    tflite_path = out / "sentiment_int8.tflite"
    ts.export.tflite(model, tflite_path, quantize="int8", calibration=examples.dataset(), overwrite=True)
    scorer = scoring.Scorer(out)
    probs = scorer.score([t.text for t in held_out])
    labels = [t.label for t in held_out]
    return {"keras_accuracy": round(keras_accuracy(model, vocabulary, held_out), 4),
            "tflite_int8_accuracy": round(float(sum(int(p >= 0.5) == y for p, y in zip(probs, labels)) / len(labels)),
                                          4),
            "tflite_int8_bytes": tflite_path.stat().st_size, "vocabulary_size": vocabulary.size,
            "sequence_length": vocabulary.sequence_length, "held_out": len(held_out)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    quiet.enable()  # before TensorFlow loads: its start-up and info lines stay hidden (TFSCALE_VERBOSE=1 shows them)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    scale = ts.Scale.auto()  # first: before TensorFlow initializes its devices
    train, held_out = tweets.split(tweets.load(args.data or fetch_data.fetch_or_exit()), seed=args.seed)
    if args.train_limit:
        train = train[: args.train_limit]
    vectorizer, examples = text_pipeline(train, args.max_tokens, args.sequence_length, args.seed)
    vocabulary = tweets.Vocabulary(tuple(vectorizer.get_vocabulary()), args.sequence_length)
    started = time.perf_counter()
    model = train_model(scale, examples, vocabulary.size, args)
    report = {"scale": repr(scale), "train_examples": len(train), "epochs": args.epochs,
              "train_seconds": round(time.perf_counter() - started, 2)}
    if scale.is_chief:
        report.update(export(model, examples, vocabulary, held_out, Path(args.out)))
        (Path(args.out) / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
