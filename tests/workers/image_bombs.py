"""Decompression bombs read under a memory cap: prints one JSON line of what each case gave.

Usage: python image_bombs.py FOLDER CAP_GIB
The process caps its address space at CAP_GIB (resource.RLIMIT_AS) first, so a bomb that reaches a decoder or
an allocation of its claimed size fails at once instead of swapping: a regression fails fast. It writes:
- png_alone/a/bomb.png: a PNG of a few hundred bytes whose header claims 100,000 x 100,000 pixels (30 GB);
- png_among/a: 47 good 32 x 32 PNGs and that bomb;
- jpeg_among/a: 47 good 32 x 32 JPEGs and bomb.jpg, a good JPEG whose frame header claims 65,000 x 65,000;
then reads each with ts.data.image_folder in raise mode (batch 1 alone, else 16) and in skip mode, and converts
each with `tfscale data convert` (raise and skip) and reads the shards back.
"""

import json
import os
import resource
import struct
import sys
import zlib

folder, cap = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (cap << 30, cap << 30))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfscale as ts  # noqa: E402
from tfscale.data.convert import convert  # noqa: E402
from tfscale.errors import DataError  # noqa: E402


def png_bomb(path, width=100_000, height=100_000):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1000)))
                + chunk(b"IEND", b""))


def jpeg_bomb(path, good):
    data = bytearray(open(good, "rb").read())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):  # to the start-of-frame segment
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 9] = (65000).to_bytes(2, "big") * 2  # height, width
    with open(path, "wb") as f:
        f.write(bytes(data))


rng = np.random.RandomState(0)
for case in ("png_alone", "png_among", "jpeg_among"):
    os.makedirs(os.path.join(folder, case, "a"))
png_bomb(os.path.join(folder, "png_alone", "a", "bomb.png"))
for i in range(47):
    pixels = rng.randint(0, 255, (32, 32, 3), dtype=np.uint8)
    tf.io.write_file(os.path.join(folder, "png_among", "a", f"g{i:02d}.png"), tf.io.encode_png(pixels))
    tf.io.write_file(os.path.join(folder, "jpeg_among", "a", f"g{i:02d}.jpg"), tf.io.encode_jpeg(pixels))
png_bomb(os.path.join(folder, "png_among", "a", "bomb.png"))
jpeg_bomb(os.path.join(folder, "jpeg_among", "a", "bomb.jpg"), os.path.join(folder, "jpeg_among", "a", "g00.jpg"))

results = {}
for case in ("png_alone", "png_among", "jpeg_among"):
    path, batch = os.path.join(folder, case), 1 if case == "png_alone" else 16
    try:
        list(ts.data.image_folder(path, image_size=(32, 32)).batch(batch))
        raised = None
    except DataError as e:
        raised = str(e)
    pipe = ts.data.image_folder(path, image_size=(32, 32), on_error="skip")
    images = sum(int(x.shape[0]) for x, _ in pipe.batch(batch))
    try:
        convert(path, os.path.join(folder, case + "_shards"), 2)
        convert_raised = None
    except DataError as e:
        convert_raised = str(e)
    summary = convert(path, os.path.join(folder, case + "_shards"), 2, on_error="skip", overwrite=True)
    shards = (sum(int(x.shape[0]) for x, _ in ts.data.image_folder(os.path.join(folder, case + "_shards"),
                                                                     image_size=(32, 32)).batch(16))
              if summary["records"] else 0)
    results[case] = {"raised": raised, "images": images, "skipped": pipe.skipped, "named": list(pipe.records.recent),
                     "convert_raised": convert_raised, "convert": {k: summary[k] for k in ("records", "skipped")},
                     "shard_images": shards}
print(json.dumps(results))
