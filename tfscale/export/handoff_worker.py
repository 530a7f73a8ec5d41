"""The TensorFlow side of `tfscale.export.handoff`: ``python -m tfscale.export.handoff_worker JOB_DIR``.

Loads JOB_DIR/model.keras on the TensorFlow backend, calls the export function
the job names with its NumPy examples, and writes JOB_DIR/result.json
(`child_job`'s protocol): the path written, the report's fields, or the tfscale
error (what, where, fix).
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from pathlib import Path

import numpy as np

from tfscale.export import child_job


def _examples(job: Path, spec: dict | None):
    if spec is None:
        return None
    arrays = np.load(job / spec["file"])
    inputs = [arrays[f"x{i}"] for i in range(spec["inputs"])]
    x = inputs[0] if len(inputs) == 1 else inputs
    return (x, arrays["y"]) if spec["labels"] else x


def main(job: Path) -> int:
    import keras

    from tfscale import export
    from tfscale.scale import schedule  # noqa: F401 - registers WarmupSchedule, which compiled models may hold

    spec = child_job.read_job(job)
    try:
        model = keras.models.load_model(job / "model.keras")
        kwargs = dict(spec["kwargs"])
        for name, data in spec["data"].items():
            kwargs[name] = _examples(job, data)
        if spec["function"] in ("tflite", "quantize_all", "qat", "prune"):
            kwargs["chief"] = True  # the parent decided who writes
        out = getattr(export, spec["function"])(model, spec["path"], **kwargs)
        result = {"report": dataclasses.asdict(out)} if dataclasses.is_dataclass(out) else {"path": str(out)}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises ExportError
        result = {"error": child_job.error_result(e, where=f"tfscale.export.{spec['function']}",
                                                  fix="see the traceback above")}
        if "traceback" in result["error"]:
            traceback.print_exc()
    child_job.write_result(job, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
