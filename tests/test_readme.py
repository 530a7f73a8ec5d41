"""The README and docs/ as a newcomer reads them: the quickstart runs as printed, every link leads somewhere,
and no command installs tfscale from a package index (none publishes it)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

import procs

README = procs.REPO / "README.md"
PAGES = [README, *sorted((procs.REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _block_after(text: str, heading: str, language: str) -> str:
    """The first ```language block after `heading`."""
    section = text[text.index(f"\n{heading}\n"):]
    match = re.search(rf"\n```{language}\n(.*?)\n```\n", section, re.DOTALL)
    assert match, f"no {language} block after {heading!r}"
    return match.group(1)


@pytest.mark.slow
def test_readme_quickstart_runs_as_printed(tmp_path):
    """The block under "## Quickstart", saved and run as the README says, in a fresh folder: it trains on 2 CPU
    replicas, checkpoints, evaluates and writes an int8 TFLite file."""
    code = _block_after(README.read_text(), "## Quickstart", "python")
    (tmp_path / "quickstart.py").write_text(code + "\n")
    env = procs.base_env(hide=procs.hiding("sklearn"))  # the digits come from scikit-learn
    done = subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, start_new_session=True)
    assert done.returncode == 0, done.stdout[-6000:]
    accuracy = float(re.search(r"held-out accuracy: ([0-9.]+)", done.stdout).group(1))
    assert accuracy > 0.5, done.stdout[-3000:]  # 10 classes: chance is 0.1
    manifests = sorted(p.name for p in (tmp_path / "ckpt").glob("epoch-*.json"))
    assert manifests and manifests[-1] == "epoch-00005.json", manifests
    assert json.loads((tmp_path / "ckpt" / "epoch-00005.json").read_text())["num_replicas"] == 2
    assert (tmp_path / "digits_int8.tflite").stat().st_size > 1000


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_or_heading(page):
    text = page.read_text()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and file.suffix == ".md":
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.+)$", file.read_text(), re.MULTILINE)}
            assert anchor in slugs, f"{page.name} links to {target}: no such heading in {file.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_command_installs_tfscale_from_an_index(page):
    """`pip install tfscale[...]` would fetch whatever an index holds under that name: tfscale installs from its
    repository (`pip install -e ".[...]"` in a clone, or "tfscale[...] @ git+URL")."""
    for command in re.findall(r"pip install [^`\n#]*", page.read_text()):
        try:
            arguments = shlex.split(command)
        except ValueError:  # a quote closed after a line break
            arguments = command.split()
        for argument in arguments:
            assert not argument.startswith("tfscale") or "@" in argument, f"{page.name}: {command}"
