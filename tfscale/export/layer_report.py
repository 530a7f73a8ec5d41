"""The per-layer part of the export report (the figures tfscale/export/layers.py measures): its text table
(`tfscale quantize --layers`) and report.png's second figure. Standard library, NumPy and (for the figure)
matplotlib only: the parent process of a JAX-backend export reads it without TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfscale.table import render


SNR_CAP_DB = 120.0  # an output identical to the float model's but for float rounding
LAYER_SAMPLES = 256  # evaluation examples the per-layer errors are measured on (the first N)
EXPLAINED = (f"per layer, worst first: SNR dB = the layer's output against the float model's on the first "
             f"{LAYER_SAMPLES} evaluation examples (higher is closer; {SNR_CAP_DB:.0f} = identical); own dB = the "
             f"SNR of the error the layer adds itself (its noise-to-signal ratio minus its noisiest input's)")
BASELINES = ("float32", "keras_float32")  # rows whose layers are all float by definition (left out of the table)


def _db(value) -> str:
    return "-" if value is None else format(value, ".1f")


def _layered(rows: list[dict]) -> list[dict]:
    return [r for r in rows if ("layers" in r or "layers_error" in r) and r["mode"] not in BASELINES]


def layers_table(rows: list[dict]) -> str:
    """Per variant, each layer worst first: status, precision, SNR against the float model, why it is float."""
    blocks = []
    for r in _layered(rows):
        if "layers_error" in r:
            blocks.append(f"{r['mode']}: no per-layer report: {r['layers_error']}")
            continue
        body = [[e["layer"], e["type"], e["status"], e.get("precision") or "-", _db(e.get("snr_db")),
                 _db(e.get("own_snr_db")), e.get("reason") or ""] for e in r["layers"]]
        blocks.append(f"{r['mode']} ({Path(r['path']).name}):\n"
                      + render(["layer", "type", "status", "precision", "SNR dB", "own dB", "why float"], body))
    return "\n\n".join(blocks + [EXPLAINED]) if blocks else "no per-layer report (no variant was made)"


def _draw_layers(fig, rows: list[dict]) -> None:
    """A heatmap: layers (model order) against variants, each cell the SNR of the error the layer adds in that
    variant (own dB); F marks a layer kept in float, - a layer without a figure."""
    names: dict[str, int] = {}
    for r in rows:
        for e in r["layers"]:
            names.setdefault(e["layer"], e.get("index", len(names)))
    order = sorted(names, key=names.get)
    grid = np.full((len(order), len(rows)), np.nan)
    ax = fig.subplots()
    for j, r in enumerate(rows):
        for e in r["layers"]:
            i = order.index(e["layer"])
            if e.get("own_snr_db") is not None:
                grid[i, j] = e["own_snr_db"]
            text = "-" if e.get("own_snr_db") is None else f"{round(e['own_snr_db']):d}"
            ax.text(j, i, text + (" F" if e["status"] == "float" and r["mode"] != "float32" else ""),
                    ha="center", va="center", fontsize=8)
    image = ax.imshow(np.clip(grid, 0, 60), cmap="RdYlGn", vmin=0, vmax=60, aspect="auto")
    ax.set_xticks(range(len(rows)), [r["mode"] for r in rows], rotation=20)
    ax.set_yticks(range(len(order)), order)
    fig.colorbar(image, ax=ax, label="own dB (higher: closer)", shrink=0.9)
    ax.set_title(f"per layer: SNR of the error each layer adds against the float model (dB; {SNR_CAP_DB:.0f}: "
                 f"identical); F: kept in float", fontsize=10)
    fig.tight_layout()


def append_layers_figure(png: Path, rows: list[dict]) -> None:
    """Appends the per-layer heatmap below the figure already in `png` (one PNG, two figures)."""
    import io

    from matplotlib import image
    from matplotlib.figure import Figure

    shown = [r for r in _layered(rows) if r.get("layers")]
    if not shown:
        return
    height = max(len({e["layer"] for r in shown for e in r["layers"]}), 3) * 0.35 + 1.6
    fig = Figure(figsize=(12, height))
    _draw_layers(fig, shown)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    buffer.seek(0)
    top, bottom = image.imread(str(png)), image.imread(buffer)
    width = max(top.shape[1], bottom.shape[1])
    padded = [np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=1.0) for a in (top, bottom)]
    image.imsave(str(png), np.concatenate(padded), format="png")
