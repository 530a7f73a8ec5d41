"""`ExportReport`: every variant's size, accuracy and latency, the recommendation, and warnings.

The recommendation rule, stated with it wherever it is shown (`rule`): the
smallest TFLite file within the accuracy budget; files within 2% of its size
count as equally small, and one of them replaces it only when it is faster at
batch 1 (1 thread) by more than 5 µs, more than 10%, and more than the spread
of the paired differences between timing rounds. Latency differences below
that margin are noise and never decide, so the same model gets the same
recommendation run after run. Warnings flag variants slower than float32 on
this CPU by the same margin and say why (usually: XNNPACK did not take them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tfscale.errors import ExportError, install_hint
from tfscale.export import files
from tfscale.export.layer_report import append_layers_figure, layers_table
from tfscale.table import render

SIZE_TIE = 1.02  # sizes within 2% of the smallest count as equally small
SLOWER = 1.10  # a latency difference counts only above 10% ...
MIN_GAP_US = 5.0  # ... and 5 µs (smaller gaps matter to no one at batch 1) ...
# ... and the interquartile range of the per-round differences (the machine's noise while timing).
DIGITS = 4  # significant digits kept in rows and JSON ...
DECIMALS = 6  # ... and no more decimals (a drop of 2e-8 pp is 0)
ACCURACIES = ("accuracy", "binary_accuracy")


def rounded(value: Any) -> Any:
    """Floats in `value` (nested dicts and lists too) to `DIGITS` significant digits, `DECIMALS` at most."""
    if isinstance(value, float):
        return float(f"{round(value, DECIMALS):.{DIGITS}g}") + 0.0 if np.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def _fmt(value, spec: str = "", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def budget_loss(row: dict) -> float | None:
    """What counts against the accuracy budget: the drop, or 100 x disagreement without labels."""
    if row.get("drop") is not None:
        return row["drop"]
    if row.get("agreement") is not None:
        return 100.0 * (1.0 - row["agreement"])
    return None


def drop_unit(metric: str | None) -> str:
    """"pp" (percentage points) for accuracies and agreement, "%" (relative increase) for error metrics."""
    return "%" if metric in ("mae", "mse") else "pp"


def rule(max_drop: float, metric: str | None = "accuracy") -> str:
    """The recommendation rule in words, for the table and the plot."""
    return (f"the smallest file whose drop is at most {max_drop:g} {drop_unit(metric)}; files within "
            f"{100 * (SIZE_TIE - 1):.0f}% of its size count as equally small, and one of them wins only if it is "
            f"faster (batch 1, 1 thread) by more than {MIN_GAP_US:g} µs, {100 * (SLOWER - 1):.0f}% and the "
            f"spread between timing rounds")


def latency_gap(fast: dict, slow: dict, setting: str = "1t") -> tuple[float, float] | None:
    """(how much faster `fast` is than `slow` in µs, the margin that gap must exceed), or None if untimed.

    With per-round p50s (``p50_rounds_us_1t``, the same rounds for every file) the
    gap is the median of the paired differences and the margin includes their
    interquartile range; without them, the difference of the p50s.
    """
    a, b = fast.get(f"p50_us_{setting}"), slow.get(f"p50_us_{setting}")
    if not a or not b:
        return None
    margin = max(MIN_GAP_US, (SLOWER - 1) * min(a, b))
    rounds_a, rounds_b = fast.get(f"p50_rounds_us_{setting}"), slow.get(f"p50_rounds_us_{setting}")
    if rounds_a and rounds_b and len(rounds_a) == len(rounds_b):
        diffs = np.subtract(rounds_b, rounds_a)
        q1, median, q3 = np.percentile(diffs, [25, 50, 75])
        return float(median), max(margin, float(q3 - q1))
    return b - a, margin


def faster(fast: dict, slow: dict, setting: str = "1t") -> bool:
    """True when `fast` beats `slow` at batch 1 by more than the margin (see `latency_gap`)."""
    gap = latency_gap(fast, slow, setting)
    return gap is not None and gap[0] > gap[1]


TARGETS = {"edge": ("float32", "1t"), "keras": ("keras_float32", "b1")}  # target: (its baseline, latency setting)


def target_of(row: dict) -> str:
    """"edge" (a TFLite file for LiteRT) or "keras" (a .keras model served inside Keras)."""
    return row.get("target") or ("edge" if row.get("path", "").endswith(".tflite") else "keras")


def recommend(rows: list[dict], max_drop: float, target: str = "edge") -> str | None:
    """The mode `rule` picks for `target`: the smallest TFLite file ("edge"; Keras weights for "keras") within
    `max_drop`, unless an equally small one is faster at batch 1 (1 thread for TFLite, predict_on_batch for Keras)."""
    baseline, setting = TARGETS[target]
    ok = [r for r in rows if target_of(r) == target and "error" not in r and r.get("size_bytes")
          and (target == "edge") == r.get("path", "").endswith(".tflite")
          and (r["mode"] == baseline or (budget_loss(r) is not None and budget_loss(r) <= max_drop))]
    if not ok:
        return None
    ok.sort(key=lambda r: (r["size_bytes"], r["mode"]))
    best = ok[0]
    for row in ok[1:]:
        if row["size_bytes"] <= ok[0]["size_bytes"] * SIZE_TIE and faster(row, best, setting):
            best = row
    return best["mode"]


def recommendations(rows: list[dict], max_drop: float) -> dict[str, str | None]:
    """One pick per target that has rows: {"edge": mode, "keras": mode}."""
    return {t: recommend(rows, max_drop, t) for t in TARGETS if any(target_of(r) == t for r in rows)}


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
            unit = drop_unit(row.get("metric"))
            notes.append(f"{mode}: accuracy loss {loss:.2f} {unit} exceeds the budget of {max_drop:g} {unit}")
        if target_of(row) == "keras":
            notes += _review_keras(row, next((r for r in rows if r["mode"] == "keras_float32"), None))
            if row.get("reload_error"):
                notes.append(f"{mode}: {row['reload_error']}; serve the quantized model from memory, or a mode "
                             f"whose file reloads")
            continue
        if base is None or mode == "float32" or not row.get("p50_us_1t"):
            continue
        if faster(base, row):
            notes.append(f"{mode} is slower than float32 on this CPU ({row['p50_us_1t']:.0f} vs "
                         f"{base['p50_us_1t']:.0f} µs at batch 1, 1 thread): {_why_slow(row)}")
        elif row.get("xnnpack") and faster(base, row, "1t_no_xnnpack"):
            notes.append(f"{mode} is fast only with XNNPACK: without the delegate it is slower than float32 "
                         f"({row['p50_us_1t_no_xnnpack']:.0f} vs {base['p50_us_1t_no_xnnpack']:.0f} µs, 1 thread); "
                         f"deploy it on a LiteRT runtime that applies XNNPACK")
    return notes


def _review_keras(row: dict, base: dict | None) -> list[str]:
    if base is None or row is base or "error" in base or not faster(base, row, "b1"):
        return []
    backend = row.get("backend", "this backend")
    return [f"{row['mode']} is slower than keras_float32 through predict_on_batch on {backend} "
            f"({row['p50_us_b1']:.0f} vs {base['p50_us_b1']:.0f} µs at batch 1): Keras dequantizes its weights "
            f"in every call, which costs more than the smaller weights save for a model this small on this CPU; "
            f"it pays where memory bandwidth limits (large models, accelerators)"]


def _metric_cell(metric: str | None, value) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if metric in ACCURACIES else f"{value:.4g}"


def _threads(rows: list[dict]) -> int | None:
    return next((r["threads_all"] for r in rows if r.get("threads_all")), None)


@dataclasses.dataclass
class ExportReport:
    """What `quantize_all` produced and measured.

    Attributes:
        rows: one dict per variant (see `tfscale.export.validate` for the keys,
            plus mode, size_vs_float32, speedup_vs_float32, or error); floats to 4
            significant digits.
        recommended: the mode to deploy, by `rule`.
        warnings: variants that failed, exceed the budget, or run slower than float32, and why.
        max_drop: the accuracy budget (percentage points; percent for error metrics).
        reference: the Keras model's metric and predict_on_batch latency.
        recommended_by_target: the pick per target, by `rule`: "edge" (TFLite files; the same as
            `recommended`) and, where Keras modes were asked for, "keras" (a .keras model to serve in Keras).
    """

    rows: list[dict]
    recommended: str | None
    warnings: list[str]
    max_drop: float
    reference: dict[str, Any] = dataclasses.field(default_factory=dict)
    recommended_by_target: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.rows = rounded(self.rows)
        self.reference = rounded(self.reference)

    def row(self, mode: str) -> dict:
        """The row of one mode; KeyError if it was not made."""
        for r in self.rows:
            if r["mode"] == mode:
                return r
        raise KeyError(f"no variant {mode!r}; made: {[r['mode'] for r in self.rows]}")

    @property
    def metric(self) -> str | None:
        return self.reference.get("metric")

    def headers(self) -> list[str]:
        """Column headers, each with its unit."""
        metric, threads = self.metric, _threads(self.rows) or "all"
        scored = [f"{metric} %" if metric in ACCURACIES else metric, f"drop {drop_unit(metric)}"] if metric else []
        return ["mode", "size KB", "size / f32", *scored, "agree %", "p50 µs", "p90 µs", f"p50 µs {threads} thr",
                "p50 µs no XNNPACK", "XNNPACK"]

    def table(self) -> str:
        """A text table of every variant, what its columns mean, the recommendation and its rule, warnings."""
        metric = self.metric
        headers, body = self.headers(), []
        for r in [r for r in self.rows if target_of(r) == "edge"]:
            mark = " *" if r["mode"] == self.recommended else ""
            if "error" in r:
                body.append([r["mode"] + mark, "failed"] + [""] * (len(headers) - 2))
                continue
            scored = [_metric_cell(metric, r.get("value")), _fmt(r.get("drop"), "+.2f")] if metric else []
            body.append([r["mode"] + mark, _fmt(r["size_bytes"] / 1024, ".1f"), _fmt(r.get("size_vs_float32"), ".3f"),
                         *scored, _fmt(None if r.get("agreement") is None else 100 * r["agreement"], ".2f"),
                         _fmt(r.get("p50_us_1t"), ".0f"), _fmt(r.get("p90_us_1t"), ".0f"),
                         _fmt(r.get("p50_us_all"), ".0f"), _fmt(r.get("p50_us_1t_no_xnnpack"), ".0f"),
                         "-" if r.get("xnnpack") is None else ("yes" if r["xnnpack"] else "no")])
        lines = [render(headers, body)]
        threads = _threads(self.rows)
        lines.append(f"latency: batch 1, 1 thread with LiteRT's XNNPACK delegate, median of alternating rounds; "
                     f"{threads or 'all'} thr = the cores this process may use")
        if metric:
            lines.append(f"drop: the Keras model's {metric} minus the file's, in {drop_unit(metric)}"
                         + (" (percentage points; negative: the file scored higher)" if metric in ACCURACIES else
                            " (relative increase; negative: the file scored better)"))
        ref = self.reference
        if ref.get("keras_value") is not None:
            lines.append(f"Keras model: {metric} {_metric_cell(metric, ref['keras_value'])}"
                         f"{' %' if metric in ACCURACIES else ''} on {ref.get('samples')} examples, "
                         f"predict_on_batch p50 {_fmt(ref.get('predict_on_batch_p50_us'), '.0f')} µs")
        lines.append(f"recommended (*): {self.recommended or 'none'}: {rule(self.max_drop, metric)}"
                     + (" (the edge: a TFLite file for LiteRT)" if any(target_of(r) == "keras" for r in self.rows)
                        else ""))
        keras_rows = [r for r in self.rows if target_of(r) == "keras"]
        if keras_rows:
            lines += ["", self._keras_table(keras_rows)]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _keras_table(self, keras_rows: list[dict]) -> str:
        """The Keras-native variants: .keras models to serve inside Keras, weights as Keras holds them."""
        metric, pick = self.metric, self.recommended_by_target.get("keras")
        headers = ["Keras model", "weights KB", "size / f32",
                   *([f"{metric} %" if metric in ACCURACIES else metric, f"drop {drop_unit(metric)}"]
                     if metric else []),
                   "agree %", "p50 µs b1", "p50 µs b32", "layers quantized"]
        body = []
        for r in keras_rows:
            mark = " *" if r["mode"] == pick else ""
            if "error" in r:
                body.append([r["mode"] + mark, "failed"] + [""] * (len(headers) - 2))
                continue
            scored = [_metric_cell(metric, r.get("value")), _fmt(r.get("drop"), "+.2f")] if metric else []
            body.append([r["mode"] + mark, _fmt(r["size_bytes"] / 1024, ".1f"), _fmt(r.get("size_vs_float32"), ".3f"),
                         *scored, _fmt(None if r.get("agreement") is None else 100 * r["agreement"], ".2f"),
                         _fmt(r.get("p50_us_b1"), ".0f"), _fmt(r.get("p50_us_b32"), ".0f"),
                         _fmt(r.get("quantized_layers"), "d")])
        backend = next((r["backend"] for r in keras_rows if r.get("backend")), "the current backend")
        return "\n".join([render(headers, body),
                          f"Keras models (.keras, no optimizer state) to serve inside Keras; size: the weights as "
                          f"Keras holds them; latency: predict_on_batch on {backend}, batch 1 and 32, median of "
                          f"alternating rounds",
                          f"recommended for Keras serving (*): {pick or 'none'}: the same rule over weights, "
                          f"timed at batch 1 through predict_on_batch"])

    def to_dict(self) -> dict:
        return rounded({**dataclasses.asdict(self), "rule": rule(self.max_drop, self.metric)})

    def to_json(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes the report as JSON (atomically); returns the path."""
        return files.write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                overwrite=overwrite)

    def plot(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes a PNG: size against accuracy, and latency on a log axis; returns the path.

        Every variant has its own colour and marker, named in the legend (no labels
        that can overlap); the recommended one is ringed and named in the legend;
        the XNNPACK bar is drawn only where the delegate ran the file. Where rows carry a
        per-layer report, a second figure below: layers against variants (`layer_report`).
        """
        try:
            from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone
        except ImportError as e:
            raise ExportError("plotting the report needs matplotlib", where="ExportReport.plot",
                              fix=install_hint("demo", "matplotlib")) from e
        fig = Figure(figsize=(12, 5.6))
        _draw(fig, self)
        with files.atomic_file(path, overwrite=overwrite, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
            append_layers_figure(tmp, self.rows)  # the per-layer figure below, where rows have layers
        return Path(path)

    def layers_table(self) -> str:
        """The per-layer report of every variant as text (`tfscale quantize --layers`); see `layers_table`."""
        return layers_table(self.rows)


MARKERS = "osD^vP*Xhp"


def _draw(fig, report: ExportReport) -> None:
    """Left: file size against accuracy (agreement without labels); right: p50 latency per file, log axis."""
    import textwrap

    from matplotlib.patches import Patch
    from matplotlib.ticker import NullLocator

    rows = [r for r in report.rows if "error" not in r and target_of(r) == "edge"]
    colors = [f"C{i % 10}" for i in range(len(rows))]
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})
    metric = report.metric
    scale = 100 if metric in ACCURACIES or metric is None else 1
    for i, r in enumerate(rows):
        y = r.get("value") if metric else r.get("agreement")
        if y is None:
            continue
        figure = _metric_cell(metric, y) if metric else f"{100 * y:.2f}"
        label = f"{r['mode']}: {r['size_bytes'] / 1024:.1f} KB, {figure}{' %' if scale == 100 else ''}"
        # Hollow markers of different shapes: variants of nearly the same size and accuracy stay visible.
        left.scatter(r["size_bytes"] / 1024, scale * y, s=90, facecolors="none", edgecolors=colors[i],
                     linewidths=2, marker=MARKERS[i % len(MARKERS)], label=label, zorder=3)
        if r["mode"] == report.recommended:
            left.scatter(r["size_bytes"] / 1024, scale * y, s=320, facecolors="none", edgecolors="black",
                         linewidths=1.8, label=f"recommended: {r['mode']}", zorder=4)
    unit = " (%)" if scale == 100 else ""
    left.set(xlabel="file size (KB)", ylabel=(f"{metric}{unit}" if metric else "top-1 agreement with Keras (%)"),
             title="size against accuracy")
    left.grid(alpha=0.3)
    left.margins(0.12, 0.25)
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)

    timed = [(i, r) for i, r in enumerate(rows) if r.get("p50_us_1t") or r.get("p50_us_1t_no_xnnpack")]
    width = 0.38
    for x, (i, r) in enumerate(timed):
        bars = [(x - width / 2, r.get("p50_us_1t") if r.get("xnnpack") else None, colors[i], None),
                (x + width / 2, r.get("p50_us_1t_no_xnnpack"), colors[i], "//")]
        for pos, value, color, hatch in bars:
            if not value:
                continue
            right.bar(pos, value, width, color=color, hatch=hatch, edgecolor="black", linewidth=0.6, alpha=0.85)
            right.annotate(f"{value:.0f}", (pos, value), textcoords="offset points", xytext=(0, 2),
                           ha="center", fontsize=8)
    values = [v for _, r in timed for v in (r.get("p50_us_1t"), r.get("p50_us_1t_no_xnnpack")) if v] or [1.0]
    right.set_yscale("log")
    low, high = min(values) / 2, max(values) * 2.5
    right.set_ylim(low, high)
    ticks = [m * 10 ** e for e in range(-1, 7) for m in (1, 2, 5) if low <= m * 10 ** e <= high]
    right.yaxis.set_minor_locator(NullLocator())
    right.set_yticks(ticks, [f"{t:g}" for t in ticks])
    names = [("* " if r["mode"] == report.recommended else "") + r["mode"]
             + ("" if r.get("xnnpack") or r.get("xnnpack") is None else "\n(no XNNPACK)") for _, r in timed]
    right.set_xticks(range(len(timed)), names)
    right.set(ylabel="p50 latency (µs, batch 1, 1 thread, log scale)", title="latency per file")
    right.grid(axis="y", which="both", alpha=0.3)
    right.legend(handles=[Patch(facecolor="lightgray", edgecolor="black", label="with the XNNPACK delegate"),
                          Patch(facecolor="lightgray", edgecolor="black", hatch="//", label="no delegate")],
                 fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.suptitle(f"recommended: {report.recommended or 'none'}", fontsize=12, fontweight="bold")
    fig.text(0.5, 0.01, "\n".join(textwrap.wrap("rule: " + rule(report.max_drop, metric), 130)), ha="center",
             va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
