"""tf.data functions tfscale writes itself, set up in microseconds instead of tens of milliseconds.

Every new iterator (each epoch of `model.fit`, each `for batch in dataset`) sets up
its tf.data functions again. TensorFlow sets one up as a multi-device function by
default: it runs Grappler over the whole function graph first. For tfscale's batch
decoder (a loop over 16 images, ~300 nodes) that took ~65 % of a ~100 ms `iter()`
here, a third of a 2,000-image pass; each small function (a report, a filter) took
~5 ms. A function carrying the `experimental_ints_on_device` attribute (what
TensorFlow's own copy-to-device and multi-device iterator functions carry) is set
up on the iterator's device without that pass: `iter()` fell to ~5 ms, with the
same speed per image afterwards.

That is only right for functions that run on the CPU and capture no resource on
another device. So `own_functions()` marks only what is traced inside it, in the
calling thread: tfscale's decode, parse, batch and report stages. Functions of the
user (`Pipeline.map(fn)`, `filter`, a `balance` label function) are traced outside
it and keep TensorFlow's default (a Keras preprocessing layer's variables may sit
on a GPU). When tf.data fuses one of ours with one of the user's, the fused
function gets TensorFlow's default as well.

The attribute is set through a private TensorFlow class (`StructuredFunctionWrapper`), in TensorFlow's
quarantine (`tfscale.compat.tensorflow.data_function_attributes`, which patches the class only while a thread
is inside `own_functions`); where that class is missing or changed, nothing is marked and iterators are set
up at TensorFlow's usual speed.
"""

from __future__ import annotations

import contextlib

from tfscale.compat import tensorflow as tf_compat

ATTRIBUTE = "experimental_ints_on_device"


@contextlib.contextmanager
def own_functions(enabled: bool = True):
    """tf.data functions traced inside (in this thread) are tfscale's: CPU only, no captured device resource.

    `enabled=False` marks nothing (for a stage that may hold a user's function, `Op.own`)."""
    if not enabled:
        yield
        return
    with tf_compat.data_function_attributes({ATTRIBUTE: True}):
        yield
