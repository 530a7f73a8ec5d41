"""Running one Python function on every worker: the payload out, the results and errors back.

`tfscale.launch(fn, n=2, args=...)` writes ``fn``, its arguments and the
caller's ``sys.path`` into a private folder, and starts each worker as
`worker_command` (this file's `main`); a worker calls the function and
writes back its return value, or the exception it raised with its traceback.

How the function travels:

- defined in an importable module: pickled by reference (module and name);
- defined in the script being run (``python script.py``): the worker imports
  the script under the name ``__mp_main__``, as ``multiprocessing``'s spawn
  does, so its ``if __name__ == "__main__":`` block does not run again;
- defined in a notebook or a REPL (there is no file to import): pickled by
  value with ``cloudpickle`` (an optional package: the ``launch`` extra).
"""

from __future__ import annotations

import glob
import io
import os
import pickle
import sys
import time
import traceback
import types
from typing import Any

_PAYLOAD, _SYS_PATH = "payload.pkl", "sys_path.pkl"


def worker_command(folder: str) -> list[str]:
    """The command of a function's worker: this file's `main`, loaded without importing the tfscale package.

    A worker imports TensorFlow only if the function does; `python -m` would
    import ``tfscale`` (and so TensorFlow) first.
    """
    bootstrap = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location("
                 f"'_tfscale_function_worker', {os.path.abspath(__file__)!r}); "
                 "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
                 "sys.exit(module.main(sys.argv))")
    return [sys.executable, "-c", bootstrap, folder]


def _main_module_source() -> tuple[str, str] | None:
    """("path", file) or ("name", module) that recreates this process's __main__ in a worker, or None."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None) and not spec.name.startswith("ipykernel"):
        return "name", spec.name
    path = getattr(main, "__file__", None)
    if path and path.endswith(".py") and os.path.exists(path) and "ipykernel" not in path:
        return "path", os.path.abspath(path)
    return None


def _dumps(payload: Any, needs_value: bool) -> bytes:
    from tfscale.errors import ConfigError, install_hint

    if needs_value:
        try:
            import cloudpickle
        except ImportError:
            raise ConfigError("the function is defined in a notebook or REPL, and cannot be sent to the workers "
                              "without the optional package cloudpickle", where="tfscale.launch(fn, ...)",
                              fix=f"{install_hint('launch', 'cloudpickle')}; or move the function into a .py "
                                  "module and import it") from None
        return cloudpickle.dumps(payload)
    try:
        return pickle.dumps(payload)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise ConfigError(f"the function or its arguments cannot be pickled: {e}", where="tfscale.launch(fn, args)",
                          fix="define the function at the top level of a module and pass plain data "
                              "(numbers, strings, arrays, paths) as arguments") from None


def write_payload(folder: str, fn, args: tuple, kwargs: dict) -> None:
    """Writes what a worker needs to call ``fn(*args, **kwargs)`` into `folder`."""
    from tfscale.errors import ConfigError

    if not callable(fn):
        raise ConfigError(f"tfscale.launch needs a function, got {type(fn).__name__}", where="tfscale.launch(fn)",
                          fix="pass the training function itself, e.g. tfscale.launch(train, n=2)")
    main = _main_module_source()
    by_reference = _picklable_by_reference((fn, tuple(args), dict(kwargs)), main_importable=main is not None)
    data = _dumps((fn, tuple(args), dict(kwargs)), needs_value=not by_reference)
    with open(os.path.join(folder, _SYS_PATH), "wb") as f:
        pickle.dump({"sys_path": [p for p in sys.path if p], "main": main}, f)
    with open(os.path.join(folder, _PAYLOAD), "wb") as f:
        f.write(data)


def _picklable_by_reference(payload, *, main_importable: bool) -> bool:
    """True when plain pickle can send `payload` and a worker can resolve every name in it."""
    names_main = False

    class Probe(pickle.Pickler):
        def reducer_override(self, obj):
            nonlocal names_main
            if isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__":
                names_main = True
            return NotImplemented

    try:
        Probe(io.BytesIO()).dump(payload)
    except Exception:  # noqa: BLE001 - a lambda, a nested function...: only cloudpickle can send it
        return False
    return main_importable or not names_main


def _write_atomic(path: str, data: bytes) -> None:
    # imported here: the worker loads this file without the package, and restores sys.path in `_load` first
    from tfscale.storage import atomic_write

    atomic_write(path, data, sync=False)


def read_results(folder: str, world_size: int) -> list[Any]:
    """Each worker's return value, by rank, from the last attempt."""
    results = []
    for rank in range(world_size):
        files = sorted(glob.glob(os.path.join(folder, f"result-*-{rank}.pkl")), key=_attempt_of)
        with open(files[-1], "rb") as f:
            results.append(pickle.load(f))
    return results


def first_error(folder: str) -> tuple[int, BaseException | None, str, str] | None:
    """(rank, exception or None, "Type: message", traceback text) of the earliest error of the last attempt."""
    files = glob.glob(os.path.join(folder, "error-*-*.pkl"))
    if not files:
        return None
    last = max(_attempt_of(f) for f in files)
    records = []
    for path in files:
        if _attempt_of(path) == last:
            with open(path, "rb") as f:
                records.append(pickle.load(f))
    record = min(records, key=lambda r: r["time"])
    exception = None
    if record["exception"] is not None:
        try:
            exception = pickle.loads(record["exception"])
        except Exception:  # noqa: BLE001 - an exception class the launcher cannot import
            exception = None
    return record["rank"], exception, record["summary"], record["traceback"]


def _attempt_of(path: str) -> int:
    return int(os.path.basename(path).split("-")[1])


# --------------------------------------------------------------------------- the worker side


def _load(folder: str):
    with open(os.path.join(folder, _SYS_PATH), "rb") as f:
        context = pickle.load(f)
    sys.path[:0] = [p for p in context["sys_path"] if p not in sys.path]
    if context["main"] is not None:
        _recreate_main(*context["main"])
    with open(os.path.join(folder, _PAYLOAD), "rb") as f:
        return pickle.load(f)


def _recreate_main(kind: str, source: str) -> None:
    import multiprocessing.spawn
    import runpy

    if kind == "path":
        multiprocessing.spawn.import_main_path(source)
        return
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(runpy.run_module(source, run_name="__mp_main__", alter_sys=True))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def main(argv: list[str]) -> int:
    """Worker entry point: call the function, write its result or its error."""
    folder = argv[1]
    # tfscale.worker_env.RANK / RESTART, spelled out: this file runs without importing the tfscale package
    rank, attempt = int(os.environ["TFSCALE_RANK"]), int(os.environ.get("TFSCALE_RESTART", "0"))
    try:
        fn, args, kwargs = _load(folder)
        value = fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
        text = traceback.format_exc()
        sys.stderr.write(text)
        try:
            pickled = pickle.dumps(e)
            pickle.loads(pickled)
        except Exception:  # noqa: BLE001
            pickled = None
        record = {"rank": rank, "time": time.time(), "exception": pickled, "traceback": text,
                  "summary": f"{type(e).__name__}: {e}"}
        _write_atomic(os.path.join(folder, f"error-{attempt}-{rank}.pkl"), pickle.dumps(record))
        return 1
    try:
        data = pickle.dumps(value)
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"tfscale.launch: the return value of worker {rank} cannot be pickled: {e}\n")
        record = {"rank": rank, "time": time.time(), "traceback": "", "exception": None,
                  "summary": f"the return value ({type(value).__name__}) cannot be pickled: {e}; "
                             "return plain data (numbers, lists, dicts, arrays) or save the model to a file"}
        _write_atomic(os.path.join(folder, f"error-{attempt}-{rank}.pkl"), pickle.dumps(record))
        return 1
    _write_atomic(os.path.join(folder, f"result-{attempt}-{rank}.pkl"), data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
