"""Keras' private APIs that tfscale uses (the Keras quarantine; see `tfscale.compat`).

Checked on Keras 3.13-3.15 (`CHECKED`; 3.15.1 with TensorFlow 2.21 and JAX 0.10.2). The fixes of Keras bugs
that subclass or patch what tfscale builds are modules of this package: `multi_worker` (keras-team/keras#20585,
#19246 and the costs of Keras' multi-worker `fit`, on tfscale's own strategy subclass), `accumulation`
(keras-team/keras#20582, on the optimizers tfscale builds) and `quantized` (a quantized model's .keras file
with quantized layers nested in composite layers, made loadable; on the files tfscale writes). The accessors below, each with its reason and what
happens where it is gone:

1. `set_random_seed` (`keras.src.backend.common.global_state`, `keras.src.random.seed_generator.
   GLOBAL_SEED_GENERATOR`, `keras.src.utils.rng_utils.GLOBAL_RANDOM_SEED`): `keras.utils.set_random_seed`
   imports TensorFlow wherever it is installed, ~4 s of CPU in every JAX process that never uses it. Gone:
   `keras.utils.set_random_seed` (TensorFlow imported, the same seeds).
2. `flatten_layers` (`Layer._flatten_layers`): Keras has no public walk over nested layers. Gone: a walk over
   the public `layers` of each layer.
3. `resume_at_epoch` (`Trainer._initial_epoch`, which `fit` takes over its `initial_epoch` argument, as
   `keras.callbacks.BackupAndRestore` sets it): a checkpoint restored inside `fit` moves `fit` to its epoch.
   Gone: `UpstreamError` (resuming inside `fit` would silently start at epoch 0).
4. `variable_layout` (`Variable._layout`, what `keras.distribution` laid the variable out with): optimizer
   slots follow their variable's layout. Gone: None (the slot is laid out by its own path).
5. `held_value`, `set_held_value` (`Variable._value`): a JAX variable's array replaced without `assign`, which
   would lay it out again (gathering sharded weights to every host to save them). Gone: `UpstreamError`.
6. `build_shapes` (`Layer._build_shapes_dict`): the input shapes a subclassed model was built with, where it
   has no `inputs`. Gone: {} (the caller asks for the shapes).
7. `save_walk` (`keras.src.saving.saving_lib._save_state`, its frame's local `saveable`, and `H5IOStore`):
   tfscale/scale/keras_saving.py replays `save_weights`' walk to write checkpoints off the training thread.
   Outside `CHECKED`, or gone: None, and the caller saves with `model.save_weights`.
8. `building_layer` (`keras.src.backend.common.global_state`'s name scope stack and each scope's `caller`):
   `layout="auto"` places a variable by the layer that creates it (its type, its einsum equation), which Keras
   does not hand to `Distribution.get_variable_layout`. Gone: None (placed by path and shape, as before).
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from tfscale import compat

log = logging.getLogger("tfscale")

CHECKED = ((3, 13), (3, 15))  # the Keras versions every use here was read and tested on
CHECKED_TEXT = "3.13-3.15"


def keras_version() -> tuple[int, int]:
    import keras

    return compat.version(keras.__version__)


def in_checked_range() -> bool:
    return CHECKED[0] <= keras_version() <= CHECKED[1]


def set_random_seed(seed: int) -> None:
    """Seeds Keras' global seed generator without importing TensorFlow (1.); Python's and NumPy's are the caller's."""
    import keras

    try:
        from keras.src.backend.common import global_state  # private: see 1. in the module docstring
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils

        seed_key, generator_key = rng_utils.GLOBAL_RANDOM_SEED, seed_generator.GLOBAL_SEED_GENERATOR
    except (ImportError, AttributeError) as e:
        log.debug("Keras %s: seeded by keras.utils.set_random_seed (%s)", keras.__version__, e)
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(seed_key, seed)
    global_state.set_global_attribute(generator_key, None)  # recreated from the seed


def flatten_layers(model, include_self: bool = False, recursive: bool = True) -> list:
    """The layers of `model`, nested ones included (2.)."""
    walk = getattr(model, "_flatten_layers", None)
    if walk is not None:
        return list(walk(include_self=include_self, recursive=recursive))
    found, seen = ([model] if include_self else []), {id(model)}

    def visit(layer):
        for child in getattr(layer, "layers", None) or []:
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                if recursive:
                    visit(child)

    visit(model)
    return found


def resume_at_epoch(model, epoch: int | None) -> None:
    """The next `model.fit` starts at `epoch` whatever its `initial_epoch` says; None: as it says (3.)."""
    if epoch is not None and not hasattr(model, "_initial_epoch"):
        import keras

        raise compat.changed("Keras", keras.__version__, "Model._initial_epoch", CHECKED_TEXT,
                             needed_for="resuming a restored checkpoint's epoch inside fit")
    model._initial_epoch = epoch


def variable_layout(variable):
    """The layout `keras.distribution` gave `variable`, or None (4.)."""
    return getattr(variable, "_layout", None)


def building_layer():
    """The layer whose `build` creates variables now, or None (8.): the innermost name scope Keras opened with a
    caller (`keras.src.backend.common.global_state`'s "name_scope_stack", each scope's `caller`, which
    `Layer._open_name_scope` sets to the layer). Gone: None (the variable is placed by its path and shape)."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None
    for scope in reversed(global_state.get_global_attribute("name_scope_stack") or []):
        caller = getattr(scope, "caller", None)
        if caller is not None and hasattr(caller, "weights"):
            return caller
    return None


def held_value(variable):
    """The array a Keras variable holds, as stored (no autocast; 5.)."""
    _check_held(variable)
    return variable._value


def set_held_value(variable, value) -> None:
    """Replaces the array a Keras variable holds, without `assign` (5.)."""
    _check_held(variable)
    variable._value = value


def _check_held(variable) -> None:
    if not hasattr(variable, "_value"):
        import keras

        raise compat.changed("Keras", keras.__version__, "Variable._value", CHECKED_TEXT,
                             needed_for="gathering weights sharded over several hosts to save them")


def build_shapes(model) -> dict:
    """The input shapes `model` was built with, by argument name ({} where unknown; 6.)."""
    return dict(getattr(model, "_build_shapes_dict", None) or {})


@dataclasses.dataclass(frozen=True)
class SaveWalk:
    """Keras' walk of `save_weights` (7.): `walk(model, weights_store=..., assets_store=None, inner_path="",
    visited_saveables=set())`, and the store class it accepts (`store`, a subclass of which records)."""

    walk: object
    store: type

    def saveable_of_caller(self, depth: int = 2):
        """The object whose `save_own_variables` called the store's `make`, where the walk did; else None.

        `depth` counts from this function: 2 is the caller of the caller (`make`'s caller)."""
        frame = sys._getframe(depth)
        return frame.f_locals.get("saveable") if frame.f_code is self.walk.__code__ else None


def save_walk() -> SaveWalk | None:
    """Keras' save walk, or None outside `CHECKED` or where it is gone (7.)."""
    import keras

    if not in_checked_range():
        log.debug("Keras %s is outside %s: checkpoints are saved by model.save_weights", keras.__version__,
                  CHECKED_TEXT)
        return None
    try:
        from keras.src.saving import saving_lib  # private: see 7. in the module docstring
    except ImportError:
        return None
    walk, store = getattr(saving_lib, "_save_state", None), getattr(saving_lib, "H5IOStore", None)
    if walk is None or store is None or not hasattr(walk, "__code__"):
        return None
    return SaveWalk(walk, store)
