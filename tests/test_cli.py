"""The monai-lgg command line: same commands through the console script and python -m, one-line errors."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import monai_lgg
from monai_lgg import cli
from monai_lgg.bundle_paths import resolve_bundle
from monai_lgg.cli import Commands, main
from monai_lgg.cli_args import BUNDLE_CONFIGS, check_overrides, parse_command_line
from monai_lgg.data.synthetic import generate_synthetic_kaggle
from monai_lgg.errors import LGGInputError

from .conftest import CONSOLE_SCRIPT, PROJECT_ROOT, one_error_line


def run_cli(*args: str, module: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai_lgg", *args] if module else [CONSOLE_SCRIPT, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_synth_and_convert(tmp_path):
    synth = run_cli("synth", str(tmp_path / "k"), "--num_patients", "3", "--num_slices", "6", "--size", "64")
    assert synth.returncode == 0, synth.stderr
    out = run_cli(
        "convert", str(tmp_path / "k"), str(tmp_path / "n"), "--num_folds", "3", "--progress", "False", module=False
    )
    assert out.returncode == 0, out.stderr
    assert "converted 3 patients" in out.stdout
    assert (tmp_path / "n" / "datalist.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["convert", "{tmp}/missing", "{tmp}/out"], "missing: does not exist"),
        (["convert", "{tmp}", "{tmp}/out"], "contains no patient folders"),
    ],
)
def test_bad_input_one_line(tmp_path, args, message):
    result = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monai-lgg: error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_commands():
    result = run_cli("--help")
    text = result.stdout + result.stderr  # fire pages help to stderr when not on a terminal
    assert result.returncode == 0 and "convert" in text and "synth" in text


# ------------------------------------------------------------------ the command line is checked before any work


_one_line = one_error_line


@pytest.fixture(scope="module")
def one_patient(tmp_path_factory) -> Path:
    """One small synthetic patient in the Kaggle layout (what a user would predict or convert)."""
    kaggle = generate_synthetic_kaggle(tmp_path_factory.mktemp("one") / "kaggle_3m", 1, 4, 64, 0)
    return kaggle


@pytest.mark.parametrize(
    "command, typo, meant",
    [("predict", "--overlay", "--overlays"), ("convert", "--skipbad", "--skip_bad")],
)
def test_misspelled_flag_stops_before_any_output(one_patient, tmp_path, capsys, command, typo, meant):
    """A misspelled flag used to run the whole job, write its output, and only then fail (so that the corrected
    rerun met "output exists"); now it stops at once with one line naming the flag and the closest valid one."""
    source = next(p for p in one_patient.iterdir() if p.is_dir()) if command == "predict" else one_patient
    out = tmp_path / "out"
    line = _one_line(capsys, [command, str(source), str(out), typo])
    assert f"unknown flag {typo}" in line and f"did you mean {meant}" in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_misspelled_override_key_stops_before_training(capsys, monkeypatch, command):
    """``train --epoch 1`` handed ``epoch`` to the bundle config, which ignored it and trained all 40 epochs."""
    runs: list = []
    monkeypatch.setattr(cli, "_run_bundle", lambda *args: runs.append(args))
    line = _one_line(capsys, [command, "--dataset_dir", "synthetic", "--epoch", "1"])
    assert "unknown flag --epoch" in line and "did you mean --epochs" in line, line
    assert runs == [], "the bundle ran"


def test_valid_override_keys_reach_the_bundle(monkeypatch):
    """Keys of the configs (also nested ones and MONAI's own run options) still pass: the check is not too strict."""
    runs: list = []
    monkeypatch.setattr(cli, "_run_bundle", lambda *args: runs.append(args))
    main(["train", "--epochs", "1", "--network_args#dropout", "0.1", "--run_id", "training", "--noresume"])
    main(["evaluate", "--eval_split", "validation", "--ckpt_path", "m.pt", "--validate#dataloader#batch_size", "2"])
    (_, configs, train), (_, _, evaluate) = runs
    assert configs == ["train.json"] and train == {
        "dataset_dir": "synthetic",
        "epochs": 1,
        "network_args#dropout": 0.1,
        "run_id": "training",
        "resume": False,
    }
    assert evaluate["eval_split"] == "validation" and evaluate["validate#dataloader#batch_size"] == 2


def test_tracking_without_mlflow_is_refused_plainly(capsys, monkeypatch):
    """``--tracking mlflow`` without the [tracking] extra: one line naming it, not MONAI's traceback after start-up."""
    from monai_lgg import cli_args

    find_spec = cli_args.importlib.util.find_spec
    absent = lambda name: None if name == "mlflow" else find_spec(name)  # noqa: E731
    monkeypatch.setattr(cli_args.importlib.util, "find_spec", absent)
    monkeypatch.setattr(cli, "_run_bundle", lambda *args: pytest.fail("the bundle ran"))
    line = _one_line(capsys, ["train", "--tracking", "mlflow"])
    assert "--tracking mlflow needs mlflow" in line and "monai-lgg[tracking]" in line


def test_unknown_command_and_extra_argument(capsys):
    assert "unknown command 'predcit' (did you mean predict?)" in _one_line(capsys, ["predcit", "a", "b"])
    assert "synth: unexpected argument 'x'" in _one_line(capsys, ["synth", "out", "8", "24", "256", "0", "x"])
    assert "predict: missing argument OUTPUT" in _one_line(capsys, ["predict", "in"])
    assert "ambiguous" in _one_line(capsys, ["convert", "a", "b", "-s", "1"])  # --spacing, --seed, --skip_bad


_NO_TORCH = """
import json, sys
from monai_lgg.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    results.append([code, "torch" in sys.modules or "monai" in sys.modules])
print(json.dumps(results))
"""


def test_mistakes_are_refused_without_importing_torch(tmp_path):
    """A missing input or a misspelled flag is found before torch and MONAI are imported (seconds of start-up)."""
    missing = str(tmp_path / "missing")
    lines = [
        ["predict", missing, str(tmp_path / "o")],
        ["predict", str(tmp_path), str(tmp_path / "o"), "--checkpoint", missing],
        ["predict", str(tmp_path), str(tmp_path / "o"), "--ensemble", f"unet,{missing}"],
        ["convert", missing, str(tmp_path / "o")],
        ["convert_folders", missing, str(tmp_path / "o")],
        ["stats", missing],
        ["report", missing],
        ["radiogenomics", f"{tmp_path},{missing}", str(tmp_path / "o")],
        ["train", "--dataset_dir", missing],
        ["evaluate", "--bundle", missing],
        ["export", "--checkpoint", missing],
        ["train", "--epoch", "1"],
        ["predict", str(tmp_path), str(tmp_path / "o"), "--overlay"],
    ]
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, json.dumps(lines)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(lines), errors  # one line each
    for argv, (code, heavy), error in zip(lines, outcome, errors, strict=True):
        assert code == 2 and not heavy, (argv, code, heavy, error)
        assert error.startswith("monai-lgg: error: "), error
    assert sum(f"{missing}: " in e for e in errors) == len(lines) - 2 and not (tmp_path / "o").exists()


def test_version(capsys):
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"monai-lgg {monai_lgg.__version__}"
    result = run_cli("--version", module=False)
    assert result.returncode == 0 and result.stdout.strip() == f"monai-lgg {monai_lgg.__version__}", result


def _documented_command_lines() -> list[tuple[str, list[str]]]:
    """Every ``monai-lgg COMMAND ...`` line of a code block in README.md, docs/ and the bundles' docs."""
    files = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]
    files += sorted((PROJECT_ROOT / "bundles").glob("*/docs/*.md"))
    found = []
    for file in files:
        in_block, text = False, ""
        for raw in file.read_text().splitlines():
            if raw.strip().startswith("```"):
                in_block = not in_block
                continue
            text += raw.strip()
            if text.endswith("\\"):
                text = text[:-1] + " "
                continue
            line, text = text, ""
            if in_block and line.startswith("monai-lgg ") and " [--" not in line:  # "[--flag]": a usage summary
                words = shlex.split(line, comments=True)[1:]
                if words and not words[0].startswith("-"):
                    found.append((f"{file.relative_to(PROJECT_ROOT)}: {line}", words))
    return found


def test_documented_command_lines_pass_the_check():
    """The check is not stricter than the documentation: every documented command's flags and keys are valid."""
    documented = _documented_command_lines()
    assert len(documented) > 20
    for where, words in documented:
        command = words[0].replace("-", "_")
        try:
            parsed = parse_command_line(command, getattr(Commands, command), words[1:])
            if command in BUNDLE_CONFIGS and parsed.overrides:
                bundle = parsed.values.get("bundle", "unet")
                check_overrides(command, resolve_bundle(bundle), parsed.overrides, parsed.typed)
        except LGGInputError as err:
            raise AssertionError(f"{where}: {err}") from None
