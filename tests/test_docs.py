"""The documents agree with each other: every protocol that the README, the experiments and the code cite
is defined in docs/protocols.md, links into it land on a heading, nothing refers to a design document
that is not in the repository, and CI runs exactly the README's test command."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = REPO / "docs" / "protocols.md"
# the protocols the README and the experiments name; the scan below must find at least these
KNOWN_PROTOCOLS = {"LPD-ellipses", "Operator throughput", "SENSE throughput"}
# "the LPD-ellipses protocol", "the Operator throughput protocol": a capitalised name, one more word at most
CITATION = re.compile(r"\b([A-Z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*(?: [a-z][a-z-]*)?) protocol\b")
LINK = re.compile(r"docs/protocols\.md#([A-Za-z0-9_-]+)")
SKIPPED_DIRECTORIES = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist",
                       ".ipynb_checkpoints", ".import_linter_cache", "runs", "reports", "pirecon-job",
                       "pirecon-demo", "lightning_logs"}


def headings() -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{2,6} (.+)$", PROTOCOLS.read_text(encoding="utf-8"), re.M)]


def anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def citing_files() -> list[Path]:
    """The README and the experiments (configs, scripts, SLURM files): where protocols are cited by name."""
    experiments = [p for p in sorted((REPO / "experiments").rglob("*"))
                   if p.is_file() and p.suffix in (".yaml", ".yml", ".py", ".sbatch", ".md")]
    return [REPO / "README.md", *experiments]


def repository_files() -> list[Path]:
    """The files of the working tree that git would commit (tracked or not ignored); a walk without git."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        files = []
        for root, directories, names in os.walk(REPO):
            directories[:] = [d for d in directories if d not in SKIPPED_DIRECTORIES and not d.endswith(".egg-info")]
            files.extend(Path(root) / name for name in names)
        return files
    return [REPO / name for name in listed.decode().split("\0") if name and (REPO / name).is_file()]


def test_protocols_document_exists_with_headings():
    assert PROTOCOLS.is_file()
    assert KNOWN_PROTOCOLS <= set(headings())
    assert "Training, validation and test streams" in headings()


def test_anchor_rule():
    assert anchor("Operator throughput") == "operator-throughput"
    assert anchor("Training, validation and test streams") == "training-validation-and-test-streams"
    assert anchor("LPD-ellipses") == "lpd-ellipses"


def test_every_cited_protocol_has_a_heading():
    defined = set(headings())
    cited: dict[str, set[str]] = {}
    for path in citing_files():
        for name in CITATION.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(name, set()).add(str(path.relative_to(REPO)))
    assert KNOWN_PROTOCOLS <= set(cited), sorted(cited)  # the scan finds the citations at all
    missing = {name: sorted(where) for name, where in cited.items() if name not in defined}
    assert not missing, f"protocols cited without a heading in docs/protocols.md: {missing}"


def test_links_into_the_protocols_land_on_a_heading():
    anchors = {anchor(h) for h in headings()}
    sources = [*citing_files(), PROTOCOLS, *sorted((REPO / "src").rglob("*.py")),
               *sorted((REPO / "notebooks").glob("*.py"))]
    linked = {}
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            linked.setdefault(target, set()).add(str(path.relative_to(REPO)))
        if path == PROTOCOLS:
            for target in re.findall(r"\]\(#([A-Za-z0-9_-]+)\)", text):
                linked.setdefault(target, set()).add("docs/protocols.md")
    assert {"operator-throughput", "sense-throughput"} <= set(linked)
    broken = {target: sorted(where) for target, where in linked.items() if target not in anchors}
    assert not broken, f"links to docs/protocols.md without a matching heading: {broken}"


def test_nothing_refers_to_a_missing_design_document():
    name = "DESIGN" + ".md"  # spelled apart so that this file does not match itself
    assert not (REPO / name).exists()
    found = []
    for path in repository_files():
        relative = path.relative_to(REPO)
        if relative.parts[0] == "docs":
            continue
        try:
            if name.encode() in path.read_bytes():
                found.append(str(relative))
        except OSError:
            continue
    assert not found, f"files that refer to {name} (the protocols are in docs/protocols.md): {sorted(found)}"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = 'pip install -e ".[dev]" && python -m pytest'
    assert command in readme
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == command
    installs = [line for line in lines if re.search(r"\bpip\b.*\binstall\b", line)]
    assert installs == [command], f".ci/run installs more than the README's command: {installs}"


@pytest.mark.parametrize("text, names", [
    ("on the LPD-ellipses protocol (docs/protocols.md)", ["LPD-ellipses"]),
    ("the Operator throughput protocol of docs/protocols.md", ["Operator throughput"]),
    ("Learned Primal-Dual on the LPD-ellipses protocol, 30-minute CPU budget", ["LPD-ellipses"]),
    ("The scripts set 2 threads for their protocol", []),
])
def test_citation_pattern(text, names):
    assert CITATION.findall(text) == names
