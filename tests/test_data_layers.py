"""tfscale.data is laid out in layers that import only downward: no cycle, no import inside a function to dodge one.

A subpackage (sharding/, images/, records/) counts as one unit: imports inside it are its own business.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tfscale" / "data"

# each module's layer; a module may import tfscale.data modules of lower layers only
LAYERS = {
    # the element ops (decode, resize, parse), the batch contract and their helpers
    "batching": 0, "badrecords": 0, "arrays": 0, "functions": 0, "epochs": 0,
    "core": 1, "transforms": 2, "text": 2, "sharding": 1, "service": 3, "order": 3,
    # sources (readers); images/: the image element ops (codecs, decoding, fallback, ops) and the folder source
    "readers": 4, "images": 4,
    # Pipeline
    "pipeline": 5,
    # sinks (convert, index); records/: the shard format, its readers, index and manifest
    "encoders": 6, "records": 6, "convert": 7,
    # the public factories, then the tools built on them
    "image_folder": 8, "tfrecord": 8, "tables": 8, "sources": 8, "inspect": 9,
}


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(tfscale.data module imported, at module level?) for every import in `tree`."""
    found = []
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "tfscale.data":
                names = [a.name for a in node.names]
            elif node.module.startswith("tfscale.data."):
                names = [node.module.split(".")[2]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[2] for a in node.names if a.name.startswith("tfscale.data.")]
        found.extend((n, id(node) in top) for n in names)
    return found


def _graph() -> dict[str, list[tuple[str, bool]]]:
    """unit -> its imports of other units (a module, or a subpackage's files together)."""
    graph: dict[str, list[tuple[str, bool]]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        unit = parts[0].removesuffix(".py")
        if unit == "__init__":
            continue
        graph.setdefault(unit, []).extend(i for i in _imports(ast.parse(path.read_text())) if i[0] != unit)
    return graph


def test_every_module_has_a_layer():
    assert sorted(set(_graph()) - set(LAYERS)) == []


def test_modules_import_only_lower_layers_at_module_level():
    wrong = [f"{m} (layer {LAYERS[m]}) imports {d} (layer {LAYERS.get(d)})" for m, deps in _graph().items()
             for d, _ in deps if d in LAYERS and LAYERS[d] >= LAYERS[m]]
    assert wrong == []


def test_no_tfscale_data_import_inside_a_function():
    inside = [f"{m} imports {d} inside a function" for m, deps in _graph().items() for d, top in deps if not top]
    assert inside == []


def test_the_import_graph_has_no_cycle():
    graph = {m: {d for d, _ in deps if d in LAYERS} for m, deps in _graph().items()}
    state: dict[str, int] = {}

    def visit(node, path):
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            visit(dep, path + [node])
        state[node] = 2

    for module in sorted(graph):
        visit(module, [])
