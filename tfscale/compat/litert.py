"""LiteRT's private APIs that tfscale uses (the LiteRT quarantine; see `tfscale.compat`).

Checked on ai-edge-litert 2.3.0.

1. `op_names` (`ai_edge_litert.interpreter.Interpreter._get_ops_details`): the ops of a loaded model after
   delegation, to report whether XNNPACK took the model (a ``DELEGATE`` op); the interpreter has no public
   list of its ops. Gone: None, and the latency report leaves "xnnpack" unknown. `op_details` (the same call):
   each op's name, input and output tensors, for the per-layer report (tfscale/export/layers.py). Gone: None,
   and the per-layer report says the file's ops cannot be read.
"""

from __future__ import annotations

CHECKED_TEXT = "2.3"


def op_names(interpreter) -> list[str] | None:
    """The names of the ops `interpreter` runs, delegated ones as ``DELEGATE``; None where it cannot say (1.)."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None
    return [op["op_name"] for op in details()]


def op_details(interpreter) -> list[dict] | None:
    """Each op of `interpreter` in execution order: op_name, inputs and outputs (tensor indices; -1 for an
    absent optional input), operand_types, result_types; None where it cannot say (1.)."""
    details = getattr(interpreter, "_get_ops_details", None)
    return None if details is None else list(details())
