"""Quarantine of Keras' private saving internals: a `.weights.h5` written from values captured at one step.

Why: `model.save_weights` reads every variable while it writes the file, so it must run in the training
thread and the step waits for the disk (25-60 ms for an 8 MB file here, against 5 ms steps). `capture(model)`
takes the values (the only part the step waits for) and returns a function that writes the same file later, in
another thread, while training goes on, and returns its checksum and size. On TensorFlow the values are views of
the tensors the variables hold, copied by TensorFlow itself only when a later step updates them (`_host_copy`):
~0.7 ms for that model's 8 MB with its Adam state, against ~3 ms copied into reused arrays (what JAX arrays still
are: Keras donates them to its train step) and ~4 ms with a new `Variable.numpy()` copy of each. What each part
cost before (the MLP of benchmarks/bench_checkpoint.py, 2 cores, CPU ms): Keras' walk 7-12, reading the values
2-3, h5py writing the file 3 (besides the bytes), SHA-256 of the file read back 5.5 + the read.

- **What to save, found once.** Keras' own walk over the model (`saving_lib._save_state`, which names every
  entry exactly as `save_weights` does) runs into a store that records each entry. The walk reads every
  attribute of every object (`dir` + `getattr`), so the saveables it visits, with their paths and metadata,
  are kept per model (`_Layout`), and later captures call their `save_own_variables` again, as the walk
  would, without walking. The layout is walked anew when the model's or the optimizer's variables are not the
  same objects any more (a new optimizer, a rebuilt layer), and a walk whose calls could not be recorded is
  made at every capture. Keras' own optimizer is replayed as its `save_own_variables` reads (each of its
  `variables` in order, 3.13-3.15), from the variables, not from the `numpy()` copies it would make.
- **Written once by h5py, then from its bytes.** The first file of a structure (the groups, their attributes,
  each dataset's name, shape and dtype) is written by h5py as `H5IOStore` writes it; the bytes between the
  datasets' values (HDF5's headers, the groups, the attributes: a few KB) and the place of each value
  (`Dataset.id.get_offset()`, a contiguous dataset) are kept (`_Template`). A later file of that structure is
  those bytes with each value written at its place by `os.pwrite`, with no h5py call at all; it is the same
  file h5py would write (the same structure, written the same way), which `model.load_weights` reads
  (tests/test_checkpoints.py restores from it; benchmarks/bench_checkpoint.py compares it with Keras' own).
- **Checksummed while written.** The manifest's CRC-32 (`checkpoint_store.Checksum`; SHA-256 before, ~4x the
  CPU) runs over the same pieces in file order, from memory (the file is not read back); `os.pwrite` and
  `zlib.crc32` release the GIL, so the training thread runs meanwhile.

Private names used, reached through Keras' quarantine (`tfscale.compat.keras.save_walk`, checked on Keras 3.13-3.15):
`keras.src.saving.saving_lib._save_state`
(its frame's local `saveable`, the object whose `save_own_variables` receives the store that `make` returns),
and `keras.src.saving.saving_lib.H5IOStore` (the walk accepts only its instances; the file layout replayed
here is its `make` / `__setitem__`: a group ``vars`` under each path, metadata as attributes, a dataset per
key, bfloat16 marked by a ``dtype`` attribute). Outside that range, or where they are gone, `capture` returns
None and the caller saves with `model.save_weights` in the training thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref

import h5py
import keras
import numpy as np

from tfscale.compat import keras as keras_compat
from tfscale.scale.checkpoint_store import Checksum

log = logging.getLogger("tfscale")

MAX_TEMPLATES = 8  # structures whose bytes are kept (one per model saved, as a rule)
_IOV_MAX = getattr(os, "IOV_MAX", 16)  # buffers per pwritev (1024 on Linux)
_WALK = keras_compat.save_walk()  # None outside the Keras versions checked: `capture` says so with None
_STORE = _WALK.store if _WALK is not None else None
_OPTIMIZER_SAVE = getattr(getattr(keras.optimizers, "Optimizer", None), "save_own_variables", None)


def _supported() -> bool:
    return _WALK is not None


def _stores_copies(saveable) -> bool:
    """`saveable` stores NumPy copies made for the store: Keras' own optimizer, which stores `variable.numpy()`
    of each variable (base_optimizer.py, 3.13-3.15), not an array it keeps and changes later."""
    return _OPTIMIZER_SAVE is not None and getattr(type(saveable), "save_own_variables", None) is _OPTIMIZER_SAVE


def _tf_variable(value):
    """The `tf.Variable` behind `value` (a Keras variable on TensorFlow, or a `tf.Variable`), else None."""
    if isinstance(value, keras.Variable):
        value = value.value
    return value if callable(getattr(value, "value", None)) and hasattr(value, "handle") else None


def _current(value) -> np.ndarray:
    """The value of a variable (or a tensor or array) now, as a NumPy array: a view of the backend's buffer, no copy,
    where the backend allows.

    A Keras variable's `value` is TensorFlow's `tf.Variable` (whose `value()` is the tensor it holds now, and
    `EagerTensor.__array__` a view of that tensor's buffer) or a JAX array (a view on the host CPU, a transfer
    from an accelerator).
    """
    variable = _tf_variable(value)
    if variable is not None:
        value = variable.value()
    elif isinstance(value, keras.Variable):
        value = value.value
    return np.asarray(value)


def _host_copy(value, copied: bool, into: np.ndarray | None) -> tuple[np.ndarray, bool]:
    """(the value now in host memory, which training does not change at the next steps; whether that array may be
    overwritten by a later capture once its file is written).

    - A TensorFlow variable: a view of the tensor it holds now, not copied. TensorFlow copies a variable's buffer
      before it updates it while another tensor still holds that buffer (copy-on-write: `AssignAdd/Sub/
      VariableOp` and XLA's updates allocate anew instead of writing in place), so the view keeps this step's
      values while the next steps train, at the cost of one copy inside the next step that updates it instead
      of one here (the capture waits ~1 ms instead of ~3.5 for benchmarks/bench_checkpoint.py's 8 MB). It is
      never overwritten later: a variable that no step updated (a frozen layer's) still lives in that buffer.
    - A NumPy value of a saveable that `copied` it (`_stores_copies`): a copy already, kept as it is.
    - Anything else (a JAX array, whose buffer the next step may take over: Keras donates the state to its
      train step; a value a saveable computed): copied into `into` (the array of an earlier capture whose
      file is written, reused: no new memory to fault in) where it fits, else into a new array.
    """
    if copied and isinstance(value, np.ndarray):
        return np.asarray(value, order="C"), True
    variable = _tf_variable(value)
    if variable is not None:
        view = np.asarray(variable.value())
        return (view if view.flags.c_contiguous else np.array(view, order="C")), False  # (ascontiguousarray: 1-d)
    source = _current(value)
    if into is None or into.shape != source.shape or into.dtype != source.dtype:
        into = np.empty(source.shape, source.dtype)
    np.copyto(into, source, casting="no")
    return into, True


@dataclasses.dataclass
class _Group:
    path: str
    metadata: dict | None
    values: list[tuple[str, np.ndarray]] = dataclasses.field(default_factory=list)
    reusable: list[bool] = dataclasses.field(default_factory=list)  # per value: a later capture may overwrite it


class _Recorder(_STORE or object):
    """What Keras' walk (or a saveable's `save_own_variables`) writes, kept as groups of host copies (into the
    arrays of `reuse`, in order, where they fit)."""

    def __init__(self, reuse: list[np.ndarray] | None = None):  # nothing opened: an H5IOStore only for the walk's
        self.groups: list[_Group] = []                          # isinstance check
        self.saveables: list | None = []  # (saveable, path, metadata) per `make`; None: one was not seen
        self._copied = False  # the saveable of the group being filled stores copies (`_stores_copies`)
        self._reuse, self._count = reuse or [], 0

    def __bool__(self):
        return True

    def make(self, path, metadata=None):
        saveable = _WALK.saveable_of_caller()  # the object whose save_own_variables called make()
        if saveable is None or self.saveables is None:
            self.saveables = None
        else:
            self.saveables.append((saveable, path, metadata))
        return self.entry(path, metadata, saveable)

    def entry(self, path, metadata=None, saveable=None):
        """Opens the group `path` for `saveable` (as `make` does; for a saveable asked again without the walk)."""
        self.groups.append(_Group(path, metadata))
        self._copied = saveable is not None and _stores_copies(saveable)
        return self

    def __setitem__(self, key, value):  # a variable, or a value the saveable computed (the optimizer's)
        into = self._reuse[self._count] if self._count < len(self._reuse) else None
        self._count += 1
        array, reusable = _host_copy(value, self._copied, into)
        self.groups[-1].values.append((key, array))
        self.groups[-1].reusable.append(reusable)


class _Layout:
    """The saveables Keras' walk visits in a model, in order, with their paths and metadata (held weakly: the
    layout is kept per model, and must not keep the model alive), and the arrays of the last capture whose file
    is written (`release`), for the next capture to copy into."""

    def __init__(self, saveables: list, signature: tuple):
        self.saveables = [(weakref.ref(saveable), path, metadata) for saveable, path, metadata in saveables]
        self.signature = signature
        self._free: list[np.ndarray] | None = None
        self._lock = threading.Lock()

    def capture(self) -> list[_Group] | None:
        """The groups, or None where a saveable is gone (walk again)."""
        with self._lock:
            reuse, self._free = self._free, None  # taken by this capture until its file is written
        recorder = _Recorder(reuse)
        for ref, path, metadata in self.saveables:
            saveable = ref()
            if saveable is None:
                return None
            store = recorder.entry(path, metadata)  # values copied by the recorder (`_host_copy`)
            if _stores_copies(saveable):  # Keras' optimizer stores `variable.numpy()` of each of its variables
                for i, variable in enumerate(saveable.variables):  # (3.13-3.15): the variables, copied as above
                    store[str(i)] = variable
            else:
                saveable.save_own_variables(store)
        return recorder.groups

    def release(self, groups: list[_Group]) -> None:
        """`groups`' file is written: their arrays may be overwritten by the next capture."""
        with self._lock:  # in order (a capture reuses them by position); None where a view must be left alone
            self._free = [array if reusable else None
                          for group in groups for (_, array), reusable in zip(group.values, group.reusable)]


_layouts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its _Layout


def _signature(model) -> tuple:
    """The identity of every variable of `model` and its optimizer: a layout is reused only while it holds."""
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.variables) + list(getattr(optimizer, "variables", None) or [])
    return (id(optimizer), *(id(v) for v in variables))


def _groups(model) -> tuple[list[_Group], _Layout | None]:
    """The values of `model`'s saveables now, and the layout that made them (None: walked, not replayed)."""
    signature = _signature(model)
    layout = _layouts.get(model)
    groups = layout.capture() if layout is not None and layout.signature == signature else None
    if groups is not None:
        return groups, layout
    recorder = _Recorder()
    _WALK.walk(model, weights_store=recorder, assets_store=None, inner_path="", visited_saveables=set())
    try:
        _layouts[model] = _Layout(recorder.saveables, signature)
    except TypeError:  # the walk could not be recorded (None), or an object without weak references
        _layouts.pop(model, None)
        log.debug("keras_saving: the save walk cannot be replayed; every capture walks the model")
    return recorder.groups, None


def capture(model):
    """The values of `model`'s variables and its optimizer's now, and a function `write(path)` that writes them
    as `model.save_weights(path)` would and returns the file's (checksum hex digest, bytes); None where these
    internals are not known to work (see above).

    The file is not synced: the caller syncs it before renaming it into place. Call `write` once: after it, the
    next capture of the model copies its values into the same arrays (no new memory per save).

    Example:
        write = capture(model)          # in the training thread, at the step
        digest, size = write(path)      # later, in any thread
    """
    if not _supported():
        return None
    groups, layout = _groups(model)

    def write(path: str) -> tuple[str, int]:  # once: its arrays go to the next capture afterwards
        try:
            return write_weights(groups, path)
        finally:
            if layout is not None:
                layout.release(groups)

    return write


# ---------------------------------------------------------------------- the file

@dataclasses.dataclass(frozen=True)
class _Template:
    """A `.weights.h5` of one structure without its values.

    Attributes:
        size: the file's bytes.
        pieces: the whole file in order: (offset, the bytes there) or (offset, index of the value there).
        reusable: every value has its own place (none is among the bytes), so any values of the structure fit.
    """

    size: int
    pieces: tuple[tuple[int, bytes | int], ...]
    reusable: bool


_templates: dict[tuple, _Template] = {}  # structure -> its bytes (`_structure`)
_templates_lock = threading.Lock()


def _structure(groups: list[_Group]) -> tuple | None:
    """What a file's bytes other than the values depend on; None where it cannot be a key."""
    try:
        structure = tuple((g.path, tuple(sorted((g.metadata or {}).items())),
                           tuple((key, array.shape, array.dtype.str) for key, array in g.values)) for g in groups)
        hash(structure)
    except TypeError:  # metadata that cannot be sorted or hashed: written by h5py every time
        return None
    return structure


def write_weights(groups: list[_Group], path: str) -> tuple[str, int]:
    """Writes `groups` as a `.weights.h5` at `path` (replacing it); returns its (`Checksum` hex digest, bytes)."""
    arrays = [array for group in groups for _, array in group.values]
    structure = _structure(groups)
    with _templates_lock:
        template = _templates.get(structure) if structure is not None else None
    written = template is None
    if written:  # h5py writes the file whole; its bytes are kept for the next files of this structure
        template = _write_h5py(groups, path)
        if template.reusable and structure is not None:
            with _templates_lock:
                _templates[structure] = template
                while len(_templates) > MAX_TEMPLATES:
                    del _templates[next(iter(_templates))]
    # An existing file is written over, not truncated first (a spare of the caller's: `CheckpointStore.prune`):
    # its pages and blocks are used again instead of freed and allocated anew (8 MB here: 1.4 ms of CPU, against
    # 2.7 ms into new pages and up to 27 ms where they must fault in from the host: a VM's balloon took them).
    fd = os.open(path, os.O_WRONLY | (0 if written else os.O_CREAT), 0o666)
    try:
        pieces = [(offset, _bytes(arrays[piece]) if isinstance(piece, int) else piece)
                  for offset, piece in template.pieces]
        if not written:  # the pieces cover the file in order: one system call (one wait for the GIL after it)
            _pwrite(fd, [data for _, data in pieces])
            if os.fstat(fd).st_size > template.size:  # a longer file written over: cut to this one's end
                os.ftruncate(fd, template.size)
        if hasattr(os, "posix_fadvise"):  # Linux starts writing the dirty pages to the disk now (dropping none):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the caller's fsync then waits less
        digest = Checksum()
        for _, data in pieces:  # the file's bytes in order, from memory
            digest.update(data)
    finally:
        os.close(fd)
    return digest.hexdigest(), template.size


def _write_h5py(groups: list[_Group], path: str) -> _Template:
    """Writes the file with h5py as `H5IOStore` does; returns its `_Template` (the bytes read back)."""
    places: list[tuple[int, int, int]] = []  # (offset, index of the value, its bytes), for the values stored apart
    index, reusable = 0, True
    with h5py.File(path, "w") as f:
        for group in groups:
            if group.metadata or group.values:  # H5IOStore creates a group without metadata once a value is set
                entry = f.create_group(group.path).create_group("vars") if group.path else f.create_group("vars")
                for key, value in (group.metadata or {}).items():
                    entry.attrs[key] = value
            for key, array in group.values:
                if keras.backend.standardize_dtype(array.dtype) == "bfloat16":
                    entry.create_dataset(key, data=array).attrs["dtype"] = "bfloat16"
                else:
                    entry[key] = array
                offset = entry[key].id.get_offset()
                plain = array.dtype.kind in "fiu" and array.dtype.isnative  # stored as its bytes in memory
                if plain and offset is not None and entry[key].id.get_storage_size() == array.nbytes:
                    places.append((offset, index, array.nbytes))
                else:
                    reusable = reusable and array.nbytes == 0
                index += 1
    return _template(path, places, reusable)


def _template(path: str, places: list[tuple[int, int, int]], reusable: bool) -> _Template:
    fd = os.open(path, os.O_RDONLY)
    try:
        size, position, pieces = os.fstat(fd).st_size, 0, []
        for offset, index, nbytes in sorted(places):
            if offset < position or offset + nbytes > size:
                raise OSError(f"{path}: HDF5 placed a dataset's value at bytes {offset}-{offset + nbytes}, over the "
                              f"one before (ending at {position}) or past the file's end ({size})")
            if offset > position:
                pieces.append((position, _pread(fd, offset - position, position)))
            pieces.append((offset, index))
            position = offset + nbytes
        if size > position:
            pieces.append((position, _pread(fd, size - position, position)))
    finally:
        os.close(fd)
    return _Template(size, tuple(pieces), reusable)


def _bytes(array: np.ndarray) -> memoryview:
    return memoryview(array).cast("B")


def _pwrite(fd: int, buffers: list) -> None:
    """Writes `buffers` one after the other from the file's start (`os.pwritev`, continued where it stopped)."""
    buffers, offset = [memoryview(b).cast("B") for b in buffers], 0
    while buffers:
        written = os.pwritev(fd, buffers[:_IOV_MAX], offset) if hasattr(os, "pwritev") else \
            os.pwrite(fd, buffers[0], offset)
        offset += written
        while buffers and written >= len(buffers[0]):
            written -= len(buffers[0])
            buffers.pop(0)
        if buffers and written:
            buffers[0] = buffers[0][written:]


def _pread(fd: int, count: int, offset: int) -> bytes:
    chunks = []
    while count > 0:
        chunk = os.pread(fd, count, offset)
        if not chunk:
            raise OSError(f"the file ended {count} bytes early at byte {offset}")
        chunks.append(chunk)
        count, offset = count - len(chunk), offset + len(chunk)
    return b"".join(chunks)
