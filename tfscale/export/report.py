"""`ExportReport`: every variant's size, accuracy and latency, the recommendation, and warnings.

The recommendation is the smallest TFLite variant within the accuracy budget;
variants within 2% of that size count as equally small and the fastest of them
(p50 at batch 1, 1 thread) wins. Warnings flag variants that are slower than
float32 on this CPU and say why (usually: the XNNPACK delegate did not take them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from tfscale.errors import ExportError
from tfscale.export import files

SIZE_TIE = 1.02  # sizes within 2% of the smallest count as equally small
SLOWER = 1.10  # "slower" than float32: p50 more than 10% above float32's (timed in alternating rounds)
MIN_GAP_US = 5.0  # ... and by more than 5 µs: smaller gaps are noise and matter to no one at batch 1


def _fmt(value, spec: str = "", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def budget_loss(row: dict) -> float | None:
    """What counts against the accuracy budget: the drop, or 100 x disagreement without labels."""
    if row.get("drop") is not None:
        return row["drop"]
    if row.get("agreement") is not None:
        return 100.0 * (1.0 - row["agreement"])
    return None


def recommend(rows: list[dict], max_drop: float) -> str | None:
    """The smallest TFLite variant within `max_drop`; among near-equal sizes, the fastest."""
    ok = [r for r in rows if r.get("path", "").endswith(".tflite") and "error" not in r
          and (r["mode"] == "float32" or (budget_loss(r) is not None and budget_loss(r) <= max_drop))]
    if not ok:
        return None
    smallest = min(r["size_bytes"] for r in ok)
    near = [r for r in ok if r["size_bytes"] <= smallest * SIZE_TIE]
    return min(near, key=lambda r: (r.get("p50_us_1t") or float("inf"), r["size_bytes"]))["mode"]


def _slower(value: float | None, base: float | None) -> bool:
    return bool(value and base) and value > SLOWER * base and value - base > MIN_GAP_US


def _why_slow(row: dict) -> str:
    if not row.get("xnnpack"):
        extra = " (XNNPACK has no int16x8 kernels)" if row["mode"] == "int16x8" else ""
        return f"the XNNPACK delegate did not take its ops{extra}, so LiteRT ran its slower reference kernels"
    if row["mode"] == "dynamic":
        return "XNNPACK ran it, but dynamic-range kernels quantize activations at every call, which costs more " \
               "than it saves for this model"
    return "XNNPACK ran it, but quantize/dequantize work outweighs the gain for a model this small"


def review(rows: list[dict], max_drop: float) -> list[str]:
    """Warnings: failed variants, variants over budget, variants slower than float32 and why."""
    notes = []
    base = next((r for r in rows if r["mode"] == "float32" and "error" not in r), None)
    for row in rows:
        mode = row["mode"]
        if "error" in row:
            notes.append(f"{mode}: not produced: {row['error']}")
            continue
        loss = budget_loss(row)
        if loss is not None and loss > max_drop and mode != "float32":
            unit = "%" if row.get("metric") in ("mae", "mse") else " pp"
            notes.append(f"{mode}: accuracy loss {loss:.2f}{unit} exceeds the budget of {max_drop}{unit}")
        if base is None or mode == "float32" or not row.get("p50_us_1t"):
            continue
        if _slower(row["p50_us_1t"], base["p50_us_1t"]):
            notes.append(f"{mode} is slower than float32 on this CPU ({row['p50_us_1t']:.0f} vs "
                         f"{base['p50_us_1t']:.0f} µs at batch 1, 1 thread): {_why_slow(row)}")
        elif row.get("xnnpack") and _slower(row.get("p50_us_1t_no_xnnpack"), base.get("p50_us_1t_no_xnnpack")):
            notes.append(f"{mode} is fast only with XNNPACK: without the delegate it is slower than float32 "
                         f"({row['p50_us_1t_no_xnnpack']:.0f} vs {base['p50_us_1t_no_xnnpack']:.0f} µs, 1 thread); "
                         f"deploy it on a LiteRT runtime that applies XNNPACK")
    return notes


def _render(headers: list[str], rows: list[list[str]]) -> str:
    cells = [headers] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclasses.dataclass
class ExportReport:
    """What `quantize_all` produced and measured.

    Attributes:
        rows: one dict per variant (see `tfscale.export.validate` for the keys,
            plus mode, size_vs_float32, speedup_vs_float32, or error).
        recommended: the mode to deploy: the smallest within `max_drop`.
        warnings: variants that failed, exceed the budget, or run slower than float32, and why.
        max_drop: the accuracy budget (percentage points; percent for error metrics).
        reference: the Keras model's metric and predict_on_batch latency.
    """

    rows: list[dict]
    recommended: str | None
    warnings: list[str]
    max_drop: float
    reference: dict[str, Any] = dataclasses.field(default_factory=dict)

    def row(self, mode: str) -> dict:
        """The row of one mode; KeyError if it was not made."""
        for r in self.rows:
            if r["mode"] == mode:
                return r
        raise KeyError(f"no variant {mode!r}; made: {[r['mode'] for r in self.rows]}")

    def table(self) -> str:
        """A text table of every variant, the recommendation and the warnings."""
        metric = self.reference.get("metric") or "agreement"
        headers = ["mode", "size KB", "x f32", metric, "drop", "agree %", "p50 µs 1t", "p90 µs 1t",
                   "p50 µs all", "p50 µs no-XNNPACK", "XNNPACK"]
        body = []
        for r in self.rows:
            mark = " *" if r["mode"] == self.recommended else ""
            if "error" in r:
                body.append([r["mode"] + mark, "failed"] + [""] * (len(headers) - 2))
                continue
            body.append([r["mode"] + mark, _fmt(r["size_bytes"] / 1024, ".1f"), _fmt(r.get("size_vs_float32"), ".3f"),
                         _fmt(r.get("value"), ".4f"), _fmt(r.get("drop"), "+.2f"),
                         _fmt(None if r.get("agreement") is None else 100 * r["agreement"], ".2f"),
                         _fmt(r.get("p50_us_1t"), ".0f"), _fmt(r.get("p90_us_1t"), ".0f"),
                         _fmt(r.get("p50_us_all"), ".0f"), _fmt(r.get("p50_us_1t_no_xnnpack"), ".0f"),
                         _fmt(r.get("xnnpack"), "", "-")])
        lines = [_render(headers, body)]
        ref = self.reference
        if ref.get("keras_value") is not None:
            lines.append(f"Keras model: {metric} {ref['keras_value']:.4f} on {ref.get('samples')} examples, "
                         f"predict_on_batch p50 {_fmt(ref.get('predict_on_batch_p50_us'), '.0f')} µs")
        if any(r["mode"].startswith("keras_") for r in self.rows):
            lines.append("keras_int8 is a .keras file to serve inside Keras; its latency is predict_on_batch")
        lines.append(f"recommended: {self.recommended or 'none'} (smallest within a drop of {self.max_drop})")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes the report as JSON (atomically); returns the path."""
        return files.write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", overwrite=overwrite)

    def plot(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes a PNG: size vs accuracy, and latency with and without XNNPACK; returns the path."""
        try:
            from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone
        except ImportError as e:
            raise ExportError("plotting the report needs matplotlib", where="ExportReport.plot",
                              fix="pip install 'tfscale[demo]'") from e
        rows = [r for r in self.rows if "error" not in r]
        fig = Figure(figsize=(11, 4.2))
        left, right = fig.subplots(1, 2)
        metric = self.reference.get("metric")
        for r in rows:
            y = r.get("value") if metric else r.get("agreement")
            left.scatter(r["size_bytes"] / 1024, y, color="tab:red" if r["mode"] == self.recommended else "tab:blue")
            left.annotate(r["mode"], (r["size_bytes"] / 1024, y), textcoords="offset points", xytext=(4, 4))
        left.set(xlabel="file size (KB)", ylabel=metric or "top-1 agreement", title="size vs accuracy")
        timed = [r for r in rows if r.get("p50_us_1t") is not None]
        names = [r["mode"] for r in timed]
        xs = range(len(timed))
        right.bar([x - 0.2 for x in xs], [r["p50_us_1t"] for r in timed], 0.4, label="XNNPACK")
        right.bar([x + 0.2 for x in xs], [r.get("p50_us_1t_no_xnnpack") or 0 for r in timed], 0.4,
                  label="no delegate")
        right.set_xticks(list(xs), names, rotation=30)
        right.set(ylabel="p50 latency (µs, batch 1, 1 thread)", title="latency")
        right.legend()
        fig.tight_layout()
        with files.atomic_file(path, overwrite=overwrite, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        return Path(path)
