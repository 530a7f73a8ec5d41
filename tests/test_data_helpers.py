"""Helpers for the tfscale.data tests: small real files (images, CSV, TFRecords) written with TensorFlow."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf


def write_images(root, per_class=(6, 6), size=(20, 24), kinds=("png", "jpg"), channels=3) -> list[str]:
    """Writes images under root/class_<i>/; pixel value (0,0) encodes the image number. Returns the paths."""
    paths, n = [], 0
    for label, count in enumerate(per_class):
        folder = os.path.join(root, f"class_{label}")
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            image = np.full((*size, channels), n % 250, np.uint8)
            kind = kinds[i % len(kinds)]
            data = tf.io.encode_png(image) if kind == "png" else tf.io.encode_jpeg(image, quality=95)
            path = os.path.join(folder, f"{n:04d}.{kind}")
            tf.io.write_file(path, data)
            paths.append(path)
            n += 1
    return paths


def write_csv(path, rows: int, start: int = 0) -> str:
    with open(path, "w") as f:
        f.write("id,x,name,label\n")
        for i in range(start, start + rows):
            f.write(f"r{i},{i * 0.5},n{i},{i % 3}\n")
    return str(path)


def write_tfrecord(path, values) -> str:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for v in values:
            example = tf.train.Example(features=tf.train.Features(feature={
                "v": tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))}))
            writer.write(example.SerializeToString())
    return str(path)


def values(pipeline, key=None) -> list:
    """All elements of a pipeline as Python values (a dict key or tuple index picks one field)."""
    out = []
    for element in pipeline.dataset():
        if key is not None:
            element = element[key]
        value = element.numpy()
        out.append(value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value)
    return out


def contexts(n: int) -> list[tf.distribute.InputContext]:
    return [tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=i, num_replicas_in_sync=n)
            for i in range(n)]
