"""Image bytes: the whole-image check, sizes read from headers, and decoding (JPEG at reduced scale).

`image_ok` looks at a JPEG/PNG/GIF/BMP's signature and end marker without a
branch (`looks_whole` is its Python twin, used when converting); `size_ok`
refuses an image whose header claims more than `MAX_PIXELS` (a decompression
bomb) before it is decoded (`too_large` is its Python twin); `decode`
decodes and resizes one image; `one_png_size` tells whether a batch of PNGs
shares one size; `header_size` reads an image's size from its first bytes and
`one_decoded_size` scans a folder's files for a single decoded size (so whole
batches can be resized in one op); `jpeg_ratio_for` picks a fixed DCT scale.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def _signatures():
    """(patterns, masks): byte patterns over [first 8 bytes, last 12 bytes] that a whole image matches."""
    rows = []

    def row(head: bytes = b"", tail: dict | None = None):
        pattern, mask = [0] * 20, [False] * 20
        for i, b in enumerate(head):
            pattern[i], mask[i] = b, True
        for i, b in (tail or {}).items():
            pattern[8 + i], mask[8 + i] = b, True
        rows.append((pattern, mask))

    row(b"\x89PNG\r\n\x1a\n", dict(zip(range(4, 12), b"IEND\xaeB`\x82")))  # PNG ends with its IEND chunk
    for j in range(11):  # JPEG: end-of-image marker FFD9 within the last 12 bytes (a little padding allowed)
        row(b"\xff\xd8\xff", {j: 0xFF, j + 1: 0xD9})
    row(b"GIF8", {11: 0x3B})  # GIF trailer
    row(b"BM")
    return np.array([p for p, _ in rows], np.uint8), np.array([m for _, m in rows])


_PATTERNS, _MASKS = _signatures()

# The most pixels an image may claim: PIL's decompression-bomb limit, and what TensorFlow's JPEG decoder
# allows in 8-bit RGB (2**29 bytes). An image claiming more is refused before it is decoded: a PNG of a
# few hundred bytes can claim 100,000 x 100,000 pixels, 30 GB once decoded.
MAX_PIXELS = 2**29 // 3  # 178,956,970
TOO_LARGE = f"image too large (its header claims over {MAX_PIXELS:,} pixels)"


def _size_weights() -> np.ndarray:
    """[26, 9]: the first 26 bytes of a file times these give the numbers its header holds at fixed places.

    Columns: PNG width and height (big-endian, bytes 16 and 20), GIF width and height (little-endian
    16-bit, bytes 6 and 8), BMP width and height (little-endian 32-bit, bytes 18 and 22; 16-bit with the
    old 12-byte header) and the BMP header's size (bytes 14). JPEG keeps its size in a frame header that
    can sit anywhere: `jpeg_pixels` reads it.
    """
    weights = np.zeros((26, 9))

    def number(column: int, start: int, size: int, big_endian: bool):
        for i in range(size):
            weights[start + i, column] = 256.0 ** (size - 1 - i if big_endian else i)

    for column, (start, size, big_endian) in enumerate([(16, 4, True), (20, 4, True), (6, 2, False), (8, 2, False),
                                                        (18, 4, False), (22, 4, False), (18, 2, False),
                                                        (20, 2, False), (14, 4, False)]):
        number(column, start, size, big_endian)
    return weights


_SIZE_WEIGHTS = _size_weights()


def size_ok(contents: tf.Tensor) -> tf.Tensor:
    """True unless a PNG, GIF, BMP or JPEG header claims more than `MAX_PIXELS`; no branch, no decoding."""
    head = tf.io.decode_raw(tf.strings.substr(contents, 0, 26), tf.uint8, fixed_length=26)
    values = tf.tensordot(tf.cast(head, tf.float64), tf.constant(_SIZE_WEIGHTS), 1)
    signed = tf.where(values >= 2.0**31, 2.0**32 - values, values)  # BMP: a negative height is top-down

    def starts(signature: bytes):
        return tf.reduce_all(tf.equal(head[..., :len(signature)], tf.constant(list(signature), tf.uint8)), axis=-1)

    bmp = tf.where(tf.equal(values[..., 8], 12.0), values[..., 6] * values[..., 7], signed[..., 4] * signed[..., 5])
    pixels = tf.where(starts(b"\x89PNG\r\n\x1a\n"), values[..., 0] * values[..., 1],
                      tf.where(starts(b"GIF8"), values[..., 2] * values[..., 3],
                               tf.where(starts(b"BM"), bmp, tf.zeros_like(bmp))))
    return tf.logical_and(pixels <= MAX_PIXELS, jpeg_pixels(contents) <= MAX_PIXELS)


def _tiny_jpeg() -> tf.Tensor:
    """A whole 1 x 1 JPEG: what `jpeg_pixels` reads in place of bytes that are not a whole JPEG (no branch)."""
    global _TINY_JPEG
    if _TINY_JPEG is None:
        with tf.init_scope():
            _TINY_JPEG = tf.io.encode_jpeg(tf.zeros([1, 1, 1], tf.uint8)).numpy()
    return tf.constant(_TINY_JPEG)


_TINY_JPEG = None


def jpeg_pixels(contents: tf.Tensor) -> tf.Tensor:
    """The pixels a whole JPEG's frame header claims (float64), 0 for other bytes; a scalar or a vector.

    A JPEG keeps its size in a frame header that can sit after any number of other segments (EXIF, ICC), so
    it is read with `extract_jpeg_shape`, which parses the markers only (~2 us), never the pixels. Bytes that
    are not a whole JPEG (`image_ok`) are replaced by a 1 x 1 JPEG first, so no branch is needed. Without
    this a JPEG claiming 65,000 x 65,000 pixels was decoded at 1/8 scale into 200 MB of grey, or failed
    deep in TensorFlow without naming its file.
    """
    jpeg = tf.logical_and(tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff"), image_ok(contents))
    safe = tf.where(jpeg, contents, _tiny_jpeg())

    def pixels_of(data):
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.float64)
        return shape[0] * shape[1]

    if safe.shape.rank == 0:
        found = pixels_of(safe)
    elif safe.shape[0] is not None:  # a granule of known size: one op per image, unrolled
        found = tf.stack([pixels_of(d) for d in tf.unstack(safe)]) if safe.shape[0] else tf.zeros([0], tf.float64)
    else:
        found = tf.map_fn(pixels_of, safe, fn_output_signature=tf.float64)
    return tf.where(jpeg, found, tf.zeros_like(found))


def image_ok(contents: tf.Tensor) -> tf.Tensor:
    """True when the bytes look like a whole JPEG, PNG, GIF or BMP: signature and end marker.

    About ten ops and no branch, since it runs once per image (a tf.cond costs
    ~40 us per element in a tf.data map): the first 8 and last 12 bytes are
    matched against byte patterns in one comparison.
    """
    patterns, masks = tf.constant(_PATTERNS), tf.constant(_MASKS)
    size = tf.strings.length(contents)
    start = tf.maximum(size - 12, 0)
    probe = tf.strings.join([tf.strings.substr(contents, 0, 8), tf.strings.substr(contents, start, start * 0 + 12)])
    probe = tf.io.decode_raw(probe, tf.uint8, fixed_length=20)
    matches = tf.logical_or(tf.equal(probe[..., None, :], patterns), tf.logical_not(masks))
    return tf.logical_and(tf.reduce_any(tf.reduce_all(matches, axis=-1), axis=-1), size >= 12)


def _decode_jpeg(contents, channels: int, image_size):
    """decode_jpeg at 1/8, 1/4 or 1/2 scale when the result still covers `image_size` (DCT scaling)."""
    if image_size is None:
        return tf.io.decode_jpeg(contents, channels=channels)
    shape = tf.image.extract_jpeg_shape(contents)
    scale = tf.minimum(shape[0] // image_size[0], shape[1] // image_size[1])
    branch = tf.cast(scale >= 2, tf.int32) + tf.cast(scale >= 4, tf.int32) + tf.cast(scale >= 8, tf.int32)
    return tf.switch_case(branch, [lambda r=r: tf.io.decode_jpeg(contents, channels=channels, ratio=r,
                                                                dct_method="INTEGER_FAST") for r in (1, 2, 4, 8)])


def decode(contents: tf.Tensor, channels: int = 3, image_size=None, method: str = "bilinear",
           jpeg_ratio: int | None = None) -> tf.Tensor:
    """Decodes one image; float32 0..255 when resized to `image_size`, else uint8.

    jpeg_ratio: the files are JPEG or PNG only, and JPEGs are decoded at 1/jpeg_ratio
    scale (DecodeJpeg reads PNG too), with no branch. Otherwise a JPEG much larger than
    `image_size` picks its scale at run time and other formats go through decode_image.
    """
    if jpeg_ratio is not None:
        image = tf.io.decode_jpeg(contents, channels=channels, ratio=jpeg_ratio,
                                  dct_method="INTEGER_FAST" if jpeg_ratio > 1 else "")
    elif image_size is None:
        image = _decode_any(contents, channels)
    else:
        is_jpeg = tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff")
        image = tf.cond(is_jpeg, lambda: _decode_jpeg(contents, channels, image_size),
                        lambda: _decode_any(contents, channels))
    image.set_shape([None, None, channels])
    return image if image_size is None else tf.cast(tf.image.resize(image, image_size, method=method), tf.float32)


def _decode_any(contents: tf.Tensor, channels: int) -> tf.Tensor:
    """`decode_image`, and a BMP in one channel too: TensorFlow's BMP decoder takes 0, 3 or 4 channels only
    ("channels must be 0, 3 or 4 for BMP"), so a BMP is decoded in colour and made grey (one branch, only
    where one channel is asked for)."""
    if channels != 1:
        return tf.io.decode_image(contents, channels=channels, expand_animations=False)
    is_bmp = tf.equal(tf.strings.substr(contents, 0, 2), b"BM")
    return tf.cond(is_bmp, lambda: tf.image.rgb_to_grayscale(
        tf.io.decode_image(contents, channels=3, expand_animations=False)),
        lambda: tf.io.decode_image(contents, channels=1, expand_animations=False))


def one_png_size(contents: tf.Tensor) -> tf.Tensor:
    """True when a batch of image bytes is all PNG of one width and height (read from the IHDR chunk)."""
    head = tf.io.decode_raw(tf.strings.substr(contents, 0, 24), tf.uint8, fixed_length=24)  # signature, IHDR
    png = tf.reduce_all(tf.equal(head[:, :8], tf.constant(list(b"\x89PNG\r\n\x1a\n"), tf.uint8)))
    return tf.logical_and(png, tf.reduce_all(tf.equal(head[:, 16:24], head[:1, 16:24])))


def head(path: str, size: int = 65536) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def jpeg_ratio_for(samples: list[bytes], image_size, all_names=None) -> int | None:
    """A fixed JPEG scale for JPEG/PNG data: the largest 1/r (r in 1, 2, 4, 8) keeping `image_size` covered.

    samples: the first bytes of a few images (JPEG headers hold the size);
    all_names: every file name, when known. None when other formats are present.
    """
    if all_names is not None and any(not n.lower().endswith((".jpg", ".jpeg", ".png")) for n in all_names):
        return None
    if any(not s.startswith((b"\xff\xd8\xff", b"\x89PNG")) for s in samples if len(s) >= 4):
        return None
    sizes = []
    for data in samples:
        if image_size is not None and data.startswith(b"\xff\xd8\xff"):
            try:
                sizes.append(tf.image.extract_jpeg_shape(data).numpy()[:2])
            except (tf.errors.OpError, ValueError):
                continue  # a bad file: its check reports it when read
    smallest = min((min(h // image_size[0], w // image_size[1]) for h, w in sizes), default=1)
    return max([r for r in (1, 2, 4, 8) if r <= smallest], default=1)


def looks_whole(data: bytes) -> bool:
    """The Python twin of `image_ok`: signature and end marker of a JPEG, PNG, GIF or BMP."""
    if data.startswith(b"\xff\xd8\xff"):
        return b"\xff\xd9" in data[-1024:]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data.endswith(b"IEND\xaeB`\x82")
    if data.startswith(b"GIF8"):
        return data.endswith(b";")
    return data.startswith(b"BM") and len(data) >= 6 and int.from_bytes(data[2:6], "little") <= len(data)


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # JPEG start-of-frame markers (not DHT, JPG, DAC)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the first bytes of a PNG (IHDR) or JPEG (start of frame); None if not found."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def claimed_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) a PNG, JPEG, GIF or BMP header claims (as `size_ok` reads it); None if not found."""
    if data.startswith(b"GIF8") and len(data) >= 10:
        return int.from_bytes(data[8:10], "little"), int.from_bytes(data[6:8], "little")
    if data.startswith(b"BM") and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:
            return int.from_bytes(data[20:22], "little"), int.from_bytes(data[18:20], "little")
        height, width = (abs(int.from_bytes(data[i:i + 4], "little", signed=True)) for i in (22, 18))
        return height, width
    return header_size(data)


def too_large(data: bytes) -> tuple[int, int] | None:
    """The Python twin of `size_ok` (JPEG too): the claimed (height, width) when over `MAX_PIXELS`, else None."""
    size = claimed_size(data)
    return size if size is not None and size[0] * size[1] > MAX_PIXELS else None


def decoded_size(data: bytes, jpeg_ratio: int | None) -> tuple[int, int] | None:
    """The (height, width) `decode` gives for these first bytes: a JPEG at 1/jpeg_ratio scale (libjpeg rounds up)."""
    size = header_size(data)
    if size is None or not data.startswith(b"\xff\xd8") or not jpeg_ratio or jpeg_ratio == 1:
        return size
    return math.ceil(size[0] / jpeg_ratio), math.ceil(size[1] / jpeg_ratio)


def one_decoded_size(paths, jpeg_ratio: int | None) -> tuple[int, int] | None:
    """The decoded (height, width) every file shares, from their headers; None at the first that differs.

    Reads the first 4 KiB of each file (about 10 us a file here), so a folder of
    mixed sizes is known after a few files, and one of a single size after one pass.
    """
    first = None
    for path in paths:
        data = head(path, 4096)
        size = decoded_size(data, jpeg_ratio)
        if size is None and data.startswith(b"\xff\xd8"):  # a long EXIF block: the frame header comes later
            size = decoded_size(head(path, -1), jpeg_ratio)
        if size is None or (first is not None and size != first) or too_large(data):  # a bomb: no stand-in of its size
            return None
        first = size
    return first
