"""The README and docs stay true to the measured results and to the repository.

- The README's accuracy table is a copy of measured results: every number in a row is compared, rounded as
  printed, with the ``results.json`` that the row's own link names, so editing a number (or the JSON) without
  the other fails.
- Every relative link in the README and the docs points to a file that git tracks (a fresh clone has it), and
  every ``#anchor`` into a Markdown file names one of its headings.
- Project text speaks of the project: no issue numbers, work sessions or "the goal" of a task.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"

# The results pages written by hand (the other docs/results/**/*.md are written by tools from their inputs).
HAND_WRITTEN_RESULTS = ["README.md", "ensembles/README.md", "ablation/README.md", "isbi2012/README.md"]

FORBIDDEN = {
    "an issue reference": re.compile(r"\bissues?\b|(?<![\w&/'\"])#\d+\b", re.IGNORECASE),
    "a work session": re.compile(r"\bsessions?\b", re.IGNORECASE),
    "a task's goal": re.compile(r"\bthe goal\b", re.IGNORECASE),
}

LINK = re.compile(r"\]\(([^)\s]+)\)")
ROW_NUMBERS = re.compile(
    r"(?P<mean>\d\.\d{3}) \((?P<lo>\d\.\d{3})–(?P<hi>\d\.\d{3})\) \| (?P<median>\d\.\d{3}) \| (?P<min>\d\.\d{3}) \| "
    r"(?P<below>\d+) \| (?P<fp_pct>\d+\.\d) % \((?P<fp>\d+) of (?P<empty>\d+)\) \|"
)


def _project_text() -> list[Path]:
    pages = [README, *sorted(DOCS.glob("*.md")), *(DOCS / "results" / p for p in HAND_WRITTEN_RESULTS)]
    return pages + sorted(PROJECT_ROOT.glob("bundles/*/docs/README.md"))


def accuracy_rows(text: str) -> list[tuple[str, dict[str, str], str]]:
    """The rows of the README's accuracy table: (label, printed numbers, linked results.json path)."""
    section = text.split("\n## Accuracy", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or "results.json" not in line:
            continue
        label = line.split("|")[1].strip()
        numbers = ROW_NUMBERS.search(line)
        links = [t for t in LINK.findall(line) if t.endswith("results.json")]
        if numbers is None or len(links) != 1:
            raise AssertionError(f"README accuracy row not in the expected form: {line}")
        rows.append((label, numbers.groupdict(), links[0]))
    return rows


def row_mismatches(label: str, printed: dict[str, str], results: dict) -> list[str]:
    """Where a README row differs from its results: the raw row is the raw rule, the others leave-one-fold-out."""
    scores = results["raw"] if "raw" in label.lower() else results["lofo"]
    expected = {
        "mean": f"{scores['mean']:.3f}",
        "lo": f"{scores['ci_low']:.3f}",
        "hi": f"{scores['ci_high']:.3f}",
        "median": f"{scores['median']:.3f}",
        "min": f"{scores['min']:.3f}",
        "below": str(scores["below_0.5"]),
        "fp_pct": f"{100 * scores['fp_rate']:.1f}",
        "fp": str(scores["fp_slices"]),
        "empty": str(scores["empty_slices"]),
    }
    return [f"{label}: {k} printed {printed[k]}, results say {v}" for k, v in expected.items() if printed[k] != v]


def check_accuracy_table(text: str) -> list[str]:
    problems = []
    for label, printed, link in accuracy_rows(text):
        results = json.loads((PROJECT_ROOT / link).read_text())
        problems += row_mismatches(label, printed, results)
    return problems


def test_readme_accuracy_table_matches_its_results():
    rows = accuracy_rows(README.read_text(encoding="utf-8"))
    assert rows, "the README has no accuracy table with linked results"
    # the headline row is the shipped model's cross-validation, the one its sidecar names
    sidecar = json.loads((PROJECT_ROOT / "bundles/unet/models/model.json").read_text())
    assert rows[0][2] == sidecar["crossval"]["source"], rows[0]
    assert "leave-one-fold-out" in rows[0][0]
    assert check_accuracy_table(README.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("field", ["mean", "median", "below", "fp"])
def test_a_changed_readme_number_is_caught(field):
    text = README.read_text(encoding="utf-8")
    label, printed, _ = accuracy_rows(text)[0]
    row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    value = printed[field]
    changed = str(int(value) + 1) if value.isdigit() else f"{float(value) + 0.001:.3f}"
    start = ROW_NUMBERS.search(row).start(field)
    edited = text.replace(row, row[:start] + changed + row[start + len(value) :])
    assert any(f" {field} printed {changed}," in p for p in check_accuracy_table(edited))


def _tracked_files() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return set(out.stdout.splitlines())


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    anchors, seen = set(), {}
    for line in markdown.splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("page", _project_text(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_relative_links_point_to_tracked_files(page):
    tracked = _tracked_files()
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        root = PROJECT_ROOT.resolve()
        relative = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else None
        if relative not in tracked:
            broken.append(f"{target} (not a tracked file)")
        elif anchor and relative.endswith(".md") and anchor not in _anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    assert broken == [], f"{page.relative_to(PROJECT_ROOT)}: broken links {broken}"


@pytest.mark.parametrize("page", _project_text(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_project_text_has_no_issue_or_session_wording(page):
    found = [
        f"line {n}: {what}: {line.strip()[:100]}"
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        for what, pattern in FORBIDDEN.items()
        if pattern.search(line)
    ]
    assert found == [], f"{page.relative_to(PROJECT_ROOT)}: {found}"
