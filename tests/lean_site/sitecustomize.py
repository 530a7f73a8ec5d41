"""Imported by every Python process the tests start (tests/procs.py puts this folder first on PYTHONPATH).

TensorFlow and Keras import some packages only because they are installed: Keras' scikit-learn
wrapper imports scikit-learn (and SciPy), its array adapters pandas, its plotting helpers matplotlib,
its saving helpers IPython, and `tf.lite` imports JAX. That is about 4 of the 10 s of CPU a TensorFlow start-up costs here, and
the tests start a few hundred TensorFlow processes. The packages named in TFSCALE_TEST_HIDE are made
unimportable, as in an environment without them, so such imports fall back as they do there. A test
whose process needs one of them (the digits demo needs scikit-learn, reports need matplotlib, the JAX
engine needs JAX) leaves it out of the list: see `procs.base_env(hide=...)`.
"""

import os
import sys


class _Hidden:
    """A finder that says the hidden packages do not exist (nothing is put in sys.modules, so code that
    asks whether one was imported gets the true answer: no)."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by TFSCALE_TEST_HIDE)", name=name)
        return None


_names = [n.strip() for n in os.environ.get("TFSCALE_TEST_HIDE", "").split(",") if n.strip()]
if _names:
    sys.meta_path.insert(0, _Hidden(_names))
