"""Skip mode's second try: a part of a batch whose decode call failed, decoded again one image at a time.

An image can pass the checks (`codecs.image_ok`, `size_ok`) and still fail to decode: a PNG with a
valid header and trailer around a corrupt pixel stream, say. It fails the decode call of its whole part, and
tf.data's `ignore_errors` alone would drop that part unseen, the good images in it too. So each part gets a
small dataset of its own (`retried`), whose second branch runs only after the first failed, and that branch
decodes each image in a tf.data element of its own (`one_at_a_time`): the image that fails is left out
alone, with a verdict that names why, and the good ones beside it arrive. Clean data never takes that branch.

Without a fixed size skip mode decodes in parts all the same; the images of a part, each of its own size, are
`held` in scalars, so that they stack into one vector and are unbatched again without a copy of their pixels.
"""

from __future__ import annotations

import enum

import tensorflow as tf

from tfscale.data.badrecords import SKIP_PART
from tfscale.data.images.codecs import decode


class Verdict(enum.IntEnum):
    """What became of one image in skip mode; the image is kept only when GOOD."""

    GOOD = 0
    CORRUPT = 1  # not a whole image (`codecs.image_ok`)
    TOO_LARGE = 2  # its header claims too many pixels (`codecs.size_ok`); never decoded
    UNDECODABLE = 3  # passed both checks, failed to decode (found by `one_at_a_time`)
    RESIZED = 4  # decoded to another size than every image had when the pipeline was built



UNDECODABLE = "undecodable image"
RESIZED = "image size changed since the pipeline was built"
FIX_RESIZED = "build the pipeline again after changing files"


def retried(ds: tf.data.Dataset, whole, again, deterministic: bool) -> tf.data.Dataset:
    """`ds.map(whole)`, except that an element on which `whole` fails (an op error) goes through `again`.

    Each element becomes a small dataset of its own (`whole`'s result, else `again`'s), interleaved (in
    order when `deterministic`) with as many in flight as cores: `again` runs only where `whole` failed.
    Clean data pays that small dataset per element (~170 us here), so the elements should be large
    (`SKIP_PART` images), never single images.
    """

    def attempt(*args):
        one = tf.data.Dataset.from_tensors(args)
        return one.map(whole).ignore_errors().concatenate(one.map(again)).take(1)

    cores = tf.data.AUTOTUNE  # with tf.data's autotuner off (transforms.with_options): as many as the cores
    return ds.interleave(attempt, cycle_length=cores, block_length=1, num_parallel_calls=cores,
                         deterministic=deterministic)


def one_at_a_time(decoder, items: tf.Tensor, *, read_files: bool, check=None) -> tuple[tf.Tensor, tf.Tensor]:
    """(images, verdicts) of `items` as `decoder.images(items, skip=True)` gives them, for items whose
    `images` call failed: each image is decoded in its own tf.data element, so one that will not decode is
    left out alone (`Verdict.UNDECODABLE`; `Verdict.RESIZED` for one no longer of the decoder's uniform size).

    decoder: the `decoding.BatchDecoder` that failed. check: None, or a function contents [n] ->
    verdicts [n] (`decoding.verdict`). Slow (a tf.data element per image): only for a failed part.
    """
    contents = tf.map_fn(tf.io.read_file, items) if read_files else items
    n = tf.size(items)
    found = tf.zeros([n], tf.int32) if check is None else check(contents)

    def one(i, data):  # (i, the image (fitted to the uniform size), whether it had that size)
        if not decoder.uniform:
            return i, decoder.decode_one(data), True
        image = decode(data, decoder.channels, None, decoder.method, decoder.jpeg_ratio)
        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], decoder.uniform))
        return i, tf.cast(tf.image.resize(image, decoder.uniform, method="nearest"), tf.uint8), same

    safe = tf.where(tf.equal(found, Verdict.GOOD), contents, decoder.stand_in)  # checked bad: not decoded
    none = tf.data.Dataset.from_tensors((tf.zeros([0], tf.int32), decoder.empty(), tf.zeros([0], tf.bool)))
    each = tf.data.Dataset.from_tensor_slices((tf.range(n), safe)).map(one).ignore_errors()
    arrived, out, same = each.batch(1 << 30).concatenate(none).take(1).get_single_element()  # none: none decoded
    decoded = tf.reduce_any(tf.equal(tf.range(n)[:, None], arrived[None, :]), axis=1)
    resized = tf.scatter_nd(arrived[:, None], tf.cast(tf.logical_not(same), tf.int32), [n]) > 0
    now = tf.where(decoded, tf.where(resized, int(Verdict.RESIZED), int(Verdict.GOOD)), int(Verdict.UNDECODABLE))
    found = tf.where(tf.equal(found, Verdict.GOOD), now, found)
    return decoder.finished(tf.boolean_mask(out, tf.equal(tf.gather(found, arrived), Verdict.GOOD))), found


def held(image: tf.Tensor) -> tf.Tensor:
    """An image of any size as a scalar (a tensor list of one), so that images of several sizes stack into a vector
    and go through tf.data's unbatch by reference: skip mode's parts without a fixed size, made images again by
    `unheld`. (A part as one ragged tensor instead, its pixels copied in and out, cost ~25 % more CPU an image
    for 256x256 JPEGs here.)"""
    empty = tf.raw_ops.EmptyTensorList(element_shape=[-1, -1, image.shape[-1]], max_num_elements=1,
                                       element_dtype=image.dtype)
    return tf.raw_ops.TensorListPushBack(input_handle=empty, tensor=image)


def unheld(scalar: tf.Tensor, channels: int, dtype=tf.uint8) -> tf.Tensor:
    """The image `held` in `scalar`: [height, width, channels]."""
    image = tf.raw_ops.TensorListGetItem(input_handle=scalar, index=0, element_shape=[-1, -1, channels],
                                         element_dtype=dtype)
    image.set_shape([None, None, channels])
    return image
