"""Install a run's best model as the package's default (kpjax/weights/default), with its provenance.

    python experiments/ship_default.py runs/best

Only what inference needs travels: the run's config, the best checkpoint's
model item (no optimizer state) and its calibration (``kpjax calibrate``), plus
provenance.json naming the data, the command, the commit and the validation
figures that chose it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from kpjax.calibration import CALIBRATION_FILE
from kpjax.checkpoint import DEFAULT_MODEL, load_model
from kpjax.rundir import write_manifest

ROOT = Path(__file__).resolve().parents[1]


def ship_model(run_dir: Path, result: dict, destination: Path = DEFAULT_MODEL) -> None:
    [step] = [p for p in (run_dir / "checkpoints" / "best").iterdir() if p.name.isdigit()]  # Orbax keeps one
    if destination.exists():
        shutil.rmtree(destination)
    target = destination / "checkpoints" / "best" / step.name
    shutil.copytree(step / "model", target / "model")  # what load_model restores; no optimizer state
    shutil.copy(step / "_CHECKPOINT_METADATA", target)
    write_manifest(target)  # sealed like every checkpoint kpjax writes, so damage is caught at load
    config = json.loads((run_dir / "config.json").read_text())
    config["data"] = [Path(spec).name for spec in config["data"]]  # source names, not the trainer's paths
    (destination / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    provenance = {
        "command": result["command"],
        "commit": commit,
        "data": [Path(spec).name for spec in result["config"]["data"]],
        "validation": "person-grouped 20% split, seed 0 (experiments/common.py evaluation_sets)",
        "evaluations": {name: {k: e[k] for k in ("n", "rmse_px", "nme", "mse", "mae")}
                        for name, e in result["evaluations"].items()},
        "flip_tta_in_evaluation": result["flip_tta"],
        "params": result["params"],
        "best_epoch": result["best_epoch"],
    }
    refit = run_dir / "refit.json"
    if refit.exists():  # a head refitted after training (experiments/error_likelihood.py --save)
        record = json.loads(refit.read_text())
        provenance["error_head_refit"] = {"command": record["command"], "head": record["head"],
                                          "epochs": record["epochs"]}
    calibrated = run_dir / CALIBRATION_FILE
    if calibrated.exists():  # its keypoints moved onto a convention after training (kpjax calibrate)
        record = json.loads(calibrated.read_text())
        record["data"] = [Path(spec).name for spec in record["data"]]
        (destination / CALIBRATION_FILE).write_text(json.dumps(record, indent=2) + "\n")
        provenance["calibration"] = {k: v for k, v in record.items() if k != "offset_px"}
    photos = ROOT / "experiments" / "results" / "analysis" / "photos-end-to-end.json"
    if photos.exists():  # the headline: end to end on photos, per pipeline this model ran in
        record = json.loads(photos.read_text())
        provenance["end_to_end_photos"] = {
            "command": record["command"], "faces": record["faces"],
            "pipelines": {row["pipeline"]: {k: v for k, v in row["metrics"].items() if k not in ("nmes", "by_source")}
                          for row in record["rows"] if Path(row["model"]) == run_dir},
        }
    (destination / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    load_model(destination)  # what was shipped loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run to ship, e.g. runs/best")
    parser.add_argument("--result", type=Path, default=None,
                        help="its result JSON (default experiments/results/RUN_NAME.json)")
    args = parser.parse_args()
    result_file = args.result or ROOT / "experiments" / "results" / f"{args.run_dir.name}.json"
    ship_model(args.run_dir, json.loads(result_file.read_text()))
    size = sum(f.stat().st_size for f in DEFAULT_MODEL.rglob("*") if f.is_file())
    print(f"shipped {args.run_dir} as {DEFAULT_MODEL} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
