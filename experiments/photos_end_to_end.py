"""The headline: kpjax end to end on whole photos of persons it never trained on, beside the peers.

    python experiments/photos_end_to_end.py --model runs/photo --compare runs/oracle-default \
        --compare runs/sweep-heatmap-jitter \
        --peer mediapipe=PEERS/mediapipe-{source}.json --peer dlib=PEERS/dlib-{source}.json

Every photo of the validation persons of the shared in-the-wild photo sets (helen-68-train and
fgnet-68; kpjax's person split, seed 0) goes through `kpjax predict`'s pipeline one photo at a time:
the Haar detector, the crop, the network, and each refinement pass; the annotated faces are matched
to the detections and scored by NME (RMSE of the 15 points over the outer-eye-corner distance),
failures (NME > 10 %) and the CED's AUC to 10 % (kpjax/photo_eval.py). A peer's predictions.json
(benchmarks/photo_peers.py writes them; `{source}` is replaced by helen or fgnet) is scored by the
same code. Writes results/analysis/photos-end-to-end.json and figures/photos_ced.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

from common import ROOT, run_main, write_analysis  # noqa: E402

from kpjax import photo_eval  # noqa: E402
from kpjax.checkpoint import load_model  # noqa: E402
from kpjax.detect import DETECTORS, make_detector  # noqa: E402
from kpjax.inference import CONVERGED_PX, Predictor  # noqa: E402

PHOTO_SOURCES = {"helen": "helen-68-train", "fgnet": "fgnet-68"}
# The model's pipelines, each one change from the one before: (passes, flip TTA).
PIPELINES = {"1 pass": (1, False), "2 passes": (2, False), "3 passes": (3, False), "3 passes + flip TTA": (3, True)}
# Not a pipeline a user has: each face placed by its annotated points, what the model does when placement is perfect.
LABEL_FITTED = "1 pass on the crop fitted to the annotated points"


def read_peers(parser: argparse.ArgumentParser, specs: list[str]) -> dict[str, dict[str, list[dict]]]:
    """Each ``--peer NAME=PATTERN``'s predictions.json records, per photo source (``{source}``: its short name)."""
    peers = {}
    for spec in specs:
        name, _, pattern = spec.partition("=")
        if not name or "{source}" not in pattern:
            parser.error(f"--peer {spec}: expected NAME=PATTERN, {{source}} in PATTERN standing for "
                         f"{' or '.join(PHOTO_SOURCES)}")
        peers[name] = {}
        for short, source in PHOTO_SOURCES.items():
            path = Path(pattern.format(source=short))
            try:
                peers[name][source] = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                parser.error(f"--peer {name}: {path} unreadable ({error})")
    return peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="run directory (default: the shipped model)")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="other models to run at 1 and 3 passes, e.g. the previous default or an ablation")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=PATTERN",
                        help="a peer's predictions.json per source, {source} standing for helen or fgnet")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--pipelines", nargs="+", choices=(*PIPELINES, LABEL_FITTED), default=list(PIPELINES))
    parser.add_argument("--detector", choices=tuple(DETECTORS), default="fast",
                        help="kpjax's face detector for every kpjax row (the peers bring their own)")
    parser.add_argument("--converged-px", type=float, default=CONVERGED_PX,
                        help="refinement stops once a face's crop moves less than this (frame px); a value other "
                             "than kpjax's is named in the pipeline")
    parser.add_argument("--last-pass-only", action="store_true",
                        help="each face's keypoints from its last pass alone, not averaged with the pass before "
                             "(as kpjax took them before it averaged the two); named in the pipeline")
    parser.add_argument("--persons", choices=("val", "train"), default="val",
                        help="the photos of the validation persons (the headline) or of the training persons, on "
                             "which a pipeline's settings are chosen (give --results elsewhere for those)")
    parser.add_argument("--append", action="store_true",
                        help="add these rows to results/analysis/photos-end-to-end.json instead of replacing it "
                             "(a pipeline measured again replaces its earlier row)")
    parser.add_argument("--results", type=Path, default=None,
                        help="where analysis/photos-end-to-end.json goes (default: experiments/results; needed "
                             "with --persons train, which must not replace the headline)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="the CED plot (default: experiments/figures/photos_ced.png, or beside --results)")
    parser.add_argument("--worst", type=Path, default=None,
                        help="where the worst faces of each kpjax pipeline are drawn (real faces: not committed)")
    args = parser.parse_args()
    if args.results is None and args.persons == "train":
        parser.error("--persons train needs --results elsewhere: the headline's results are the validation persons'")
    headline = args.results is None
    args.results = args.results or ROOT / "experiments" / "results"
    args.figure = args.figure or (ROOT / "experiments" / "figures" / "photos_ced.png" if headline else
                                  args.results / "photos_ced.png")
    args.worst = args.worst or (ROOT / "runs" / "photos-worst" if headline else args.results / "worst")
    peers = read_peers(parser, args.peer)  # an unreadable file fails before any work
    runs = [(model, label) for model in args.compare for label in ("1 pass", "3 passes")]
    runs += [(args.model, label) for label in args.pipelines]
    loaded = {model_dir: load_model(model_dir) for model_dir, _ in runs}  # a missing run fails before any work

    photos = {short: photo_eval.select_persons(photo_eval.read_annotated_photos(str(args.data_root / name)),
                                                  args.persons)
              for short, name in PHOTO_SOURCES.items()}
    everything = [p for group in photos.values() for p in group]
    rows, pipeline_records = [], {}  # (model, pipeline) -> records, for the label-fitted row's comparison
    for model_dir, label in runs:
        passes, flip_tta = PIPELINES.get(label, (1, False))
        net, config = loaded[model_dir]
        name = f"kpjax {(model_dir or Path('shipped')).name}, {label}"
        same_faces = None
        if label == LABEL_FITTED:
            records = photo_eval.run_label_fitted(Predictor(net, config, batch_size=1), everything)
            same_faces = _beside_the_pipeline(net, config, args.detector, everything, records,
                                              pipeline_records.get((model_dir, "3 passes")))
        else:
            predictor = Predictor(net, config, make_detector(args.detector), batch_size=1, passes=passes,
                                  flip_tta=flip_tta, converged_px=args.converged_px,
                                  average_passes=not args.last_pass_only)
            records = pipeline_records[model_dir, label] = photo_eval.run_pipeline(predictor, everything)
            if args.converged_px != CONVERGED_PX:
                name += f" (converged at {args.converged_px:g} px)"
            if args.last_pass_only and passes > 1:
                name += " (last pass only)"
            name += f", {args.detector} detector"
        metrics = photo_eval.score(everything, records)
        photo_eval.draw_worst(everything, records, args.worst / name.replace(" ", "").replace(",", "-"))
        rows.append({"pipeline": name, "model": str(model_dir or "shipped"), "passes": passes,
                     "flip_tta": flip_tta, "metrics": metrics} | ({"same_faces": same_faces} if same_faces else {}))
        print(f"{name}: {metrics_line(metrics)}", flush=True)
    for peer, by_source in peers.items():
        records = [r for source_records in by_source.values() for r in source_records]
        metrics = photo_eval.score(everything, records)
        rows.append({"pipeline": peer, "model": peer, "passes": None, "flip_tta": False, "metrics": metrics})
        print(f"{peer}: {metrics_line(metrics)}", flush=True)
    record = {
        "command": "python " + shlex.join(["experiments/photos_end_to_end.py", *sys.argv[1:]]),
        "photos": {name: len(group) for name, group in photos.items()},
        "faces": sum(len(p.faces) for p in everything),
        "persons": f"{'validation' if args.persons == 'val' else 'training'} persons of kpjax's group split "
                   "(seed 0, 20 %)",
        "rows": rows,
    }
    existing = args.results / "analysis" / "photos-end-to-end.json"
    if args.append and existing.exists():
        record = appended(json.loads(existing.read_text()), record)
    write_analysis("photos-end-to-end", record, args.results)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    model = str(args.model or "shipped")  # its pipelines on this --detector and the crops fitted to the labels, and the peers
    shown = [row for row in record["rows"] if row["passes"] is None or row["model"] == model and (
        row["pipeline"].endswith(f", {args.detector} detector") or row["pipeline"].endswith(LABEL_FITTED))]
    photo_eval.plot_ced({row["pipeline"]: row["metrics"]["nmes"] for row in shown}, args.figure,
                        title=f"{record['faces']} faces, {record['persons'].split(' of ')[0]} of Helen and FG-NET")


def appended(earlier: dict, record: dict) -> dict:
    """``record``'s rows after ``earlier``'s, each pipeline measured again replacing its earlier row, so that the rows
    a table compares come from one run."""
    remeasured = {row["pipeline"] for row in record["rows"]}
    return record | {"rows": [row for row in earlier["rows"] if row["pipeline"] not in remeasured] + record["rows"],
                     "command": f"{earlier['command']}; then {record['command']}"}


def _beside_the_pipeline(net, config, detector: str, photos: list, label_fitted: list[dict],
                         pipeline: list[dict] | None) -> dict:
    """The label-fitted crops and the pipeline (3 passes: its records, when this run made them) on the same faces:
    those of the photos whose every face the detector finds (the faces no detector finds are the harder ones, and
    only the label-fitted crops have them)."""
    if pipeline is None:
        passes, _ = PIPELINES["3 passes"]
        predictor = Predictor(net, config, make_detector(detector), batch_size=1, passes=passes)
        pipeline = photo_eval.run_pipeline(predictor, photos)
    found = [m.photo for m in photo_eval.match_records(photos, pipeline) if None not in m.matched]
    return {"photos": len(found), "label_fitted": photo_eval.score(found, label_fitted),
            "3 passes": photo_eval.score(found, pipeline)}


def metrics_line(m: dict) -> str:
    return (f"found {m['detection_rate']:.1%}, NME {m['nme_mean']:.2%} (median {m['nme_median']:.2%}), "
            f"failures {m['failure_rate']:.1%}, AUC {m['auc10']:.3f}, "
            + ("no detector" if m["ms_per_photo_median"] is None else f"{m['ms_per_photo_median']:.0f} ms/photo"))


if __name__ == "__main__":
    run_main(main)
