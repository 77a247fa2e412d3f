"""Cross-validated accuracy of the shipped UNet when pre- or post-contrast sequences are missing.

Each patient of a converted data set is given as separate sequence files in four settings (all three; FLAIR +
pre-contrast; FLAIR + post-contrast; FLAIR alone) and segmented by the ensemble member that never trained on it
(:mod:`monai_lgg.studies.sequence_study`). Writes ``per_patient.csv``, ``results.json`` and ``README.md``.

Usage::

    monai-lgg convert "$MONAI_LGG_SHARED_DATA/lgg/kaggle_3m" /tmp/lgg
    python tools/missing_sequences.py /tmp/lgg docs/results/missing_sequences
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from monai_lgg.studies import PROJECT_ROOT
from monai_lgg.studies.sequence_study import check_against, read_rows, run_study, write_results

CV = PROJECT_ROOT / "docs" / "results" / "cv_zscore"
PUBLISHED = {
    "t1+flair+t1c": "original",
    "t1+flair": "flair_for_post",
    "flair+t1c": "flair_for_pre",
    "flair": "flair_for_both",
}
"""The cross-validation report's ``missing_sequences`` entry of each setting."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("converted", type=Path, help="monai-lgg convert output of the patients")
    parser.add_argument("out", type=Path, help="folder for README.md, per_patient.csv, results.json")
    parser.add_argument("--per_patient", type=Path, default=CV / "per_patient.csv", help="patient -> test fold")
    parser.add_argument("--bundle", default="unet", help="bundle whose checkpoint holds the fold models")
    parser.add_argument("--cases", default="", help="comma-separated patients (default: all)")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="only rewrite README.md and results.json from OUT's per_patient.csv (same command, date)",
    )
    args = parser.parse_args(argv)
    command = "python tools/missing_sequences.py " + " ".join(sys.argv[1:] if argv is None else argv)
    date = datetime.date.today().isoformat()
    if args.rewrite:
        rows = read_rows(args.out / "per_patient.csv")
        earlier = json.loads((args.out / "results.json").read_text())
        command, date = earlier["command"], earlier["date"]
    else:
        cases = [c for c in args.cases.split(",") if c] or None
        rows = run_study(
            args.converted, args.per_patient, args.bundle, cases, progress=lambda line: print(line, flush=True)
        )
    reference, notes = {}, []
    results = args.per_patient.with_name("results.json")
    if results.is_file():  # the cross-validation report's numbers of the same settings (shipped rule, flip TTA)
        published = json.loads(results.read_text())
        variants = published.get("missing_sequences", {})
        reference = {setting: variants[key] for setting, key in PUBLISHED.items() if key in variants}
        notes.append(check_against(rows, published, args.per_patient))
    record = write_results(args.out, rows, command, date, reference, notes)
    for setting, s in record["summary"].items():
        print(f"{setting:14s} mean {s['mean']:.3f} median {s['median']:.3f} min {s['min']:.3f}")
    return 0
