"""tfscale's own import-linter contract type (pyproject.toml, `contract_types`; `lint-imports` runs from the
repository root, which import-linter puts on sys.path).

`private_upstream`: only the quarantine (`tfscale.compat`) imports the private modules of upstream packages.
import-linter's `forbidden` contract cannot say it: with `include_external_packages` it keeps only an external
package's top name (`tensorflow`, not `tensorflow.python`). This contract reads the import lines that grimp
records for each import of an upstream package, and fails on one that names a private module.
tests/test_quarantine.py checks the same rule, and private attributes too, with `ast`.
"""

from __future__ import annotations

from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class PrivateUpstreamContract(Contract):
    """Modules outside `allowed` import none of `private_modules` (prefixes of dotted module paths).

    Configuration options:

        - allowed: the package that may (the quarantine).
        - private_modules: private module paths of upstream packages, e.g. "tensorflow.python", "jax._src".
    """

    type_name = "private_upstream"

    allowed = fields.StringField()
    private_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph, verbose: bool) -> ContractCheck:
        allowed = self.allowed
        upstreams = sorted({p.split(".")[0] for p in self.private_modules} & set(graph.modules))
        broken = []
        for module in sorted(graph.modules):
            if module == allowed or module.startswith(allowed + ".") or module in upstreams:
                continue
            for upstream in upstreams:
                for detail in graph.get_import_details(importer=module, imported=upstream):
                    line = detail["line_contents"]
                    if any(_names(line, private) for private in self.private_modules):
                        broken.append((module, detail["line_number"], line))
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, line_number, line in check.metadata["broken"]:
            output.print_error(f"{module}:{line_number}: {line}")
        output.new_line()
        output.print_error(f"Move each into the upstream's module of {self.allowed} (docs/DESIGN.md, "
                           "\"The upstream quarantine\").")


def _names(line: str, private: str) -> bool:
    """`line` (an import statement) imports the module `private` or one inside it."""
    words = line.replace(",", " ").replace("(", " ").split()
    if words[:1] == ["from"] and len(words) > 3:  # from A import B: A.B may be the private module
        module = words[1]
        return any(_within(m, private) for m in (module, *(f"{module}.{w}" for w in words[3:] if w != "as")))
    return any(_within(w, private) for w in words[1:])


def _within(module: str, private: str) -> bool:
    return module == private or module.startswith(private + ".")
