"""Sharded checkpoints on JAX: every process writes only its own shards, and any layout restores them.

A model whose variables are sharded across processes (``model_parallel`` with the model axis across
hosts) is saved without gathering it anywhere: each process writes the shards it holds, through
orbax-checkpoint (checked on orbax-checkpoint 0.12.8, JAX 0.10.2, Keras 3.15.1). Restoring reads onto
the variables' *current* shardings, so a checkpoint written by 2 processes over a (1, 2) model-parallel
mesh restores into ``data_parallel`` on one process with 2 devices, or into a plain single-device model
for export (``model.save("model.keras")``).

    if is_sharded(model):
        files = save_sharded(model, "ckpt/epoch-00002.sharded")["files"]   # on every process
    restore_sharded(model, "ckpt/epoch-00002.sharded")                    # on every process

The folder is one orbax checkpoint (``ocp.Checkpointer`` over ``ocp.CompositeCheckpointHandler``) with
two items, ``model`` (``model.weights``) and ``optimizer`` (``optimizer.variables``; absent when the
model had no optimizer), each an ``ocp.args.StandardSave`` tree keyed by variable path
(``sequential/dense/kernel``). Its custom metadata, under ``"tfscale"``, lists every variable in order
with its shape and dtype. Restoring matches variables by path; when the paths differ only because
Keras named the layers anew (a model built twice in one process is ``sequential_1/dense_2/...``), by
order, as Keras' own ``.weights.h5`` does, with every shape checked. A variable that matches nothing
is an error, never skipped.

Why not ``keras.callbacks.OrbaxCheckpoint`` (Keras 3.15.1): it saves only from inside ``fit`` (the
save itself is private), and ``model.load_weights`` on its folder matches by exact path through
``Model.set_state_tree``, which skips a variable whose path differs without a word
(keras-team/keras#23251: restored weights differ on JAX), and reshards only under a distribution.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import keras

from tfscale.errors import ConfigError, install_hint

log = logging.getLogger("tfscale")

FORMAT = 1
MODEL, OPTIMIZER = "model", "optimizer"  # the checkpoint's items
_META = "tfscale"  # the key of tfscale's entry in the checkpoint's custom metadata


def is_sharded(model) -> bool:
    """Whether some variable of `model` or its optimizer is a JAX array this process holds only part of (a
    replicated one, as under data_parallel over several processes, is whole on every process).

    Such a model cannot be saved by one process alone (`save_weights` would need every shard here):
    save it with `save_sharded` on every process.
    """
    if keras.backend.backend() != "jax":
        return False
    import jax

    return any(isinstance(v.value, jax.Array) and not (v.value.is_fully_addressable or v.value.is_fully_replicated)
               for group in _groups(model).values() for v in group)


def save_sharded(model, directory: str) -> dict[str, Any]:
    """Writes `model`'s weights and optimizer state to `directory`, each process only its own shards.

    Every process calls it together (a collective): orbax writes each array's shards from the process
    that holds them (one copy of a replicated array), then commits the folder once all have written.

    Args:
        model: a built Keras model on JAX (its optimizer, if any, is saved too).
        directory: a folder that does not exist yet, on a filesystem every process shares.

    Returns:
        {"files": {path relative to `directory`: bytes}, "bytes": total}, for a manifest (on process 0;
        empty on the others, which return without reading the folder: process 0 may move it next).

    Raises:
        ConfigError: `directory` exists already, the model has no variables, or orbax is not installed.
    """
    import jax
    from jax.experimental import multihost_utils

    ocp = _orbax()
    directory = os.path.abspath(directory)
    if os.path.exists(directory):
        raise ConfigError(f"{directory} exists already", where="save_sharded(directory)",
                          fix="give a new folder for each sharded checkpoint, or remove the old one")
    groups = {name: _keyed(variables) for name, variables in _groups(model).items() if variables}
    if MODEL not in groups:
        raise ConfigError("the model has no variables to save", where="save_sharded(model)",
                          fix="build the model (give it a keras.Input or call it on a batch) before saving")
    listing = {name: [[key, [int(d) for d in v.shape], str(v.dtype)] for key, v in pairs]
               for name, pairs in groups.items()}
    items = {name: ocp.args.StandardSave({key: v.value for key, v in pairs}) for name, pairs in groups.items()}
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        checkpointer.save(directory, args=ocp.args.Composite(**items),
                          custom_metadata={_META: {"format": FORMAT, "variables": listing}})
    finally:
        checkpointer.close()
    if jax.process_count() > 1:  # every process has written its shards
        multihost_utils.sync_global_devices(f"tfscale_sharded_saved:{directory}")
    if jax.process_index() != 0:  # process 0 lists (and may then move) the folder: the others return at once
        return {"files": {}, "bytes": 0}
    files = {os.path.relpath(os.path.join(root, name), directory): os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(directory) for name in names}
    return {"files": dict(sorted(files.items())), "bytes": sum(files.values())}


def restore_sharded(model, directory: str) -> None:
    """Restores a `save_sharded` checkpoint onto `model`'s current layout (any mesh, any process count).

    Each variable is read onto its own sharding (`variable.value.sharding`), so each process reads only
    the parts its devices hold. The optimizer is built first if it is not yet; a model without one
    restores only the weights (as for export). Every process calls it together.

    Args:
        model: a built Keras model on JAX, under the distribution it will train with (if any).
        directory: a folder written by `save_sharded`.

    Raises:
        ConfigError: `directory` is not a sharded checkpoint, or its variables do not fit the model's
            (the error names the variable and both shapes).
    """
    import jax

    ocp = _orbax()
    directory = os.path.abspath(directory)
    saved = _saved_variables(ocp, directory)
    if not model.weights:
        raise ConfigError("the model has no variables to restore into", where="restore_sharded(model)",
                          fix="build the model (give it a keras.Input or call it on a batch) before restoring")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    plan = {}
    for name, variables in _groups(model).items():
        if name == OPTIMIZER and optimizer is None:
            continue
        plan[name] = _match(directory, name, saved.get(name, []), variables)
    targets = {name: ocp.args.StandardRestore(
        {key: jax.ShapeDtypeStruct(v.shape, v.value.dtype, sharding=v.value.sharding) for key, v in pairs})
        for name, pairs in plan.items() if pairs}
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        restored = checkpointer.restore(directory, args=ocp.args.Composite(**targets))
    finally:
        checkpointer.close()
    for name, pairs in plan.items():
        for key, variable in pairs:
            variable.assign(restored[name][key])


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise ConfigError(f"sharded checkpoints need orbax-checkpoint, which is not installed ({e})",
                          where="tfscale.scale.sharded", fix=install_hint("jax")) from e
    return ocp


def _groups(model) -> dict[str, list]:
    """The variables a checkpoint holds, by item: the model's weights, then its optimizer's."""
    optimizer = getattr(model, "optimizer", None)
    return {MODEL: list(model.weights), OPTIMIZER: list(optimizer.variables) if optimizer is not None else []}


def _keyed(variables: list) -> list[tuple[str, Any]]:
    """(key, variable) in order: the key is the variable's path, "#2", "#3"... after a repeated one."""
    seen: dict[str, int] = {}
    keyed = []
    for v in variables:
        seen[v.path] = seen.get(v.path, 0) + 1
        keyed.append((v.path if seen[v.path] == 1 else f"{v.path}#{seen[v.path]}", v))
    return keyed


def _saved_variables(ocp, directory: str) -> dict[str, list]:
    """The checkpoint's variables by item: [key, shape, dtype] in the order they were saved."""
    not_one = dict(where=directory, fix="give a folder written by tfscale.scale.sharded.save_sharded "
                                        "(a tfscale .weights.h5 checkpoint restores with model.load_weights)")
    if not os.path.isdir(directory):
        raise ConfigError(f"{directory} is not a folder", **not_one)
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        custom = checkpointer.metadata(directory).custom_metadata or {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{directory} is not a sharded checkpoint ({type(e).__name__}: {e})", **not_one) from e
    finally:
        checkpointer.close()
    entry = custom.get(_META)
    if not isinstance(entry, dict) or "variables" not in entry:
        raise ConfigError(f"{directory} is not a tfscale sharded checkpoint (no tfscale metadata)", **not_one)
    if entry.get("format") != FORMAT:
        raise ConfigError(f"{directory} has sharded checkpoint format {entry.get('format')!r}; this tfscale "
                          f"reads format {FORMAT}", where=directory, fix="restore it with the tfscale that wrote it")
    return entry["variables"]


def _match(directory: str, item: str, saved: list, variables: list) -> list[tuple[str, Any]]:
    """(checkpoint key, variable) for every variable: by path, or by order when Keras renamed the layers.

    Raises:
        ConfigError: a variable is missing on either side, or its shapes differ.
    """
    current = _keyed(variables)
    by_key = {key: (key, shape, dtype) for key, shape, dtype in saved}
    if sorted(by_key) == sorted(key for key, _ in current):
        pairs = [(by_key[key], v) for key, v in current]
    elif len(saved) == len(current):
        pairs = list(zip((tuple(s) for s in saved), (v for _, v in current)))
        log.info("sharded checkpoint %s: %s variables matched by order (paths differ, e.g. %s here, %s there)",
                 directory, item, current[0][0], saved[0][0])
    else:
        here = {key for key, _ in current}
        missing = [f"{key} {tuple(v.shape)}" for key, v in current if key not in by_key]
        extra = [f"{key} {tuple(shape)}" for key, shape, _ in saved if key not in here]
        raise _misfit(directory, f"it holds {len(saved)} {item} variable(s) and this model {len(current)}"
                      + (f"; not in the checkpoint: {', '.join(missing[:3])}" if missing else "")
                      + (f"; not in this model: {', '.join(extra[:3])}" if extra else ""))
    for (key, shape, _), v in pairs:
        if tuple(shape) != tuple(v.shape):
            saved_as = "" if key == v.path else f" (saved as {key})"
            raise _misfit(directory, f"variable {v.path} has shape {tuple(v.shape)} in this model and "
                                     f"{tuple(shape)} in the checkpoint{saved_as}")
    return [(key, v) for (key, _, _), v in pairs]


def _misfit(directory: str, detail: str) -> ConfigError:
    return ConfigError(f"sharded checkpoint {directory} does not fit this model and optimizer: {detail}",
                       where=directory, fix="restore into the model and optimizer that wrote it, or start over "
                                            "with a new checkpoint folder")
