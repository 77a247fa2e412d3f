"""CI's lint and the pre-commit hooks check the same files with the same ruff."""

from __future__ import annotations

import configparser
import re

from .conftest import PROJECT_ROOT


def _pinned_ruff() -> str:
    dev = configparser.ConfigParser()
    dev.read(PROJECT_ROOT / "setup.cfg")
    pins = [line.strip() for line in dev["options.extras_require"]["dev"].splitlines() if line.startswith("ruff")]
    assert len(pins) == 1 and pins[0].startswith("ruff=="), pins  # format output may change between releases
    return pins[0]


def test_pre_commit_runs_the_lint_of_ci():
    config = (PROJECT_ROOT / ".pre-commit-config.yaml").read_text()
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.findall(r'additional_dependencies: \["(ruff==[\d.]+)"\]', config) == [_pinned_ruff()] * 2
    assert "entry: ruff check\n" in config and "entry: ruff format --check\n" in config
    paths = re.search(r"^LINT_PATHS := (.+)$", makefile, re.M).group(1).split()
    assert re.findall(r"files: \^\((.+)\)/", config) == ["|".join(paths)] * 2
    assert "$(BIN)/ruff check $(LINT_PATHS)" in makefile and "$(BIN)/ruff format --check $(LINT_PATHS)" in makefile
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert ci.index("make lint") < ci.index("make test")
