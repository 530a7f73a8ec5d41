"""Helpers for the tfscale.data tests: small real files (images, CSV, TFRecords) written with TensorFlow."""

from __future__ import annotations

import os
import struct
import zlib

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
            encode = {"png": tf.io.encode_png, "bmp": encode_bmp}.get(
                kind, lambda im: tf.io.encode_jpeg(im, quality=95))
            data = encode(image)
            path = os.path.join(folder, f"{n:04d}.{kind}")
            tf.io.write_file(path, data)
            paths.append(path)
            n += 1
    return paths


def encode_bmp(image: np.ndarray) -> bytes:
    """A 24-bit uncompressed BMP of an RGB uint8 image (TensorFlow has no BMP encoder): a 54-byte header, then
    rows bottom-up in BGR order, each padded to a multiple of 4 bytes."""
    height, width, _ = image.shape
    row = width * 3 + (-width * 3) % 4
    pixels = b"".join(np.ascontiguousarray(image[y, :, ::-1]).tobytes().ljust(row, b"\0")
                      for y in range(height - 1, -1, -1))
    header = (b"BM" + (54 + len(pixels)).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little")
              + (40).to_bytes(4, "little") + width.to_bytes(4, "little") + height.to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + bytes(4) + len(pixels).to_bytes(4, "little")
              + (2835).to_bytes(4, "little") * 2 + bytes(8))
    return header + pixels


def undecodable_png(png: bytes, *, keep_crc: bool = True) -> bytes:
    """`png` with its signature, IHDR and IEND intact and its compressed pixel stream garbled: it passes tfscale's
    whole-image and size checks and fails only when decoded. keep_crc: the IDAT chunk's CRC is made to match the
    garbled bytes (else libpng also finds a CRC error)."""
    out, i = bytearray(png[:8]), 8
    while i < len(png):
        size = struct.unpack(">I", png[i:i + 4])[0]
        kind, data = png[i + 4:i + 8], png[i + 8:i + 8 + size]
        if kind == b"IDAT":  # the 2-byte zlib header kept, the deflate stream after it flipped
            data = data[:2] + bytes(b ^ 0x5A for b in data[2:])
            crc = zlib.crc32(kind + data) if keep_crc else struct.unpack(">I", png[i + 8 + size:i + 12 + size])[0]
            out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)
        else:
            out += png[i:i + 12 + size]
        i += 12 + size
    return bytes(out)


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
