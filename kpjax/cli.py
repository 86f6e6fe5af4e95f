"""The ``kpjax`` command: a thin typer layer over the library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kpjax.errors import KpjaxError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Facial keypoint detection in JAX/Flax.")

DataOption = Annotated[
    Optional[list[str]],
    typer.Option("--data", help="Data source: a path (format detected) or synthetic[:N]; repeat to mix sources."),
]
ModelDirOption = Annotated[Optional[Path], typer.Option(
    "--model", help="Run directory of a trained model (default: the model shipped with kpjax).")]


KeypointsOption = Annotated[str, typer.Option("--keypoints", help="15 (Kaggle's keypoints) or 68 (iBUG's points).")]
SizeOption = Annotated[int, typer.Option(help="Side of the square face frame, pixels (16 or more).")]
ColorOption = Annotated[bool, typer.Option("--color/--grey", help="Colour (RGB) or grey-scale frames.")]
StrictOption = Annotated[bool, typer.Option(help="Stop at the first face a source cannot use, instead of skipping it.")]
MarkupOption = Annotated[Optional[str], typer.Option(help="68-point markup of .pts data: ibug or fgnet (default: detected).")]
KEYPOINT_LAYOUTS = {"15": "kaggle", "68": "ibug68"}


def _layout_name(keypoints: str) -> str:
    if keypoints not in KEYPOINT_LAYOUTS:
        raise KpjaxError(f"--keypoints {keypoints}: expected 15 or 68")
    return KEYPOINT_LAYOUTS[keypoints]


def _load_model(run_dir: Optional[Path]):
    from kpjax.checkpoint import load_model

    return load_model(run_dir)


@app.command()
def train(
    context: typer.Context,
    config_file: Annotated[Optional[Path], typer.Option(
        "--config", help="A recipe: a Python file whose get_config() returns a TrainConfig (see configs/). "
                         "The options below and --set override it.")] = None,
    settings: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Set any TrainConfig field, e.g. --set split=row or --set "
                                           "data=a.csv,b.npz; repeat for several.")] = None,
    data: DataOption = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training faces.")] = 150,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 64,
    model: Annotated[str, typer.Option(help="Model name from the registry.")] = "seed",
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    schedule: Annotated[str, typer.Option(help="constant or cosine.")] = "constant",
    loss: Annotated[str, typer.Option(help="The keypoints' loss: mse, or wing (log-shaped for small errors).")] = "mse",
    seed: Annotated[int, typer.Option(help="Seed of the model's initialisation, batch order and augmentation.")] = 0,
    split_seed: Annotated[Optional[int], typer.Option(
        help="Seed of the validation split (default: --seed); fix it to compare or ensemble runs of several seeds.")] = None,
    run_dir: Annotated[Path, typer.Option(help="Where config, split, metrics and checkpoints go.")] = Path("runs/latest"),
    init: Annotated[Optional[str], typer.Option(
        help="Fine-tune: start from a trained model's weights, a run directory or default (the shipped model). "
             "Its recipe is the one the options change (unless --config gives one); its network stays.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --run-dir from its latest checkpoint, as it was "
                                         "configured; only --epochs, --lr and --devices may be given to change it.")] = False,
    complete_only: Annotated[bool, typer.Option(help="Drop faces with any missing keypoint (the seed's choice).")] = False,
    val_fraction: Annotated[float, typer.Option(help="Share of the persons held out for validation, 0 to 0.95.")] = 0.2,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="Turn off horizontal-flip augmentation.")] = False,
    rotation: Annotated[float, typer.Option(help="Augment: random rotation, +-degrees.")] = 0.0,
    scale: Annotated[float, typer.Option(help="Augment: random zoom, +-fraction (log-uniform).")] = 0.0,
    shift: Annotated[float, typer.Option(help="Augment: random shift, +-pixels.")] = 0.0,
    photometric: Annotated[bool, typer.Option(help="Augment: random contrast, brightness and blur.")] = False,
    margin: Annotated[int, typer.Option(help="Context pixels cropped past each face's frame, so rotation, "
                                        "scale and shift show real image, not repeated edges.")] = 0,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (0: plain Adam).")] = 0.0,
    keypoints: KeypointsOption = "15",
    size: SizeOption = 96,
    color: ColorOption = False,
    strict: StrictOption = False,
    markup: MarkupOption = None,
    devices: Annotated[str, typer.Option(help="Devices per process to split each --batch over: N or all.")] = "1",
    coordinator: Annotated[Optional[str], typer.Option(
        envvar="JAX_COORDINATOR_ADDRESS",
        help="HOST:PORT of process 0 for multi-process (multi-host) training; auto under SLURM, Open MPI, Kubernetes.",
    )] = None,
    num_processes: Annotated[Optional[int], typer.Option(min=1, envvar="JAX_NUM_PROCESSES")] = None,
    process_id: Annotated[Optional[int], typer.Option(min=0, envvar="JAX_PROCESS_ID")] = None,
):
    """Train a keypoint model; the best-validation and latest checkpoints go to --run-dir.

    The recipe: --config's file, else --resume's run, else --init's run, else the defaults; options and --set change it.
    """
    import dataclasses

    from kpjax.checkpoint import init_run
    from kpjax.config import TrainConfig, load_config, option_name, override
    from kpjax.distributed import init_distributed
    from kpjax.train import train as run_training

    options = dict(data=data or [], model=model, epochs=epochs, batch_size=batch, learning_rate=lr, schedule=schedule,
                   loss=loss, seed=seed, split_seed=split_seed, complete_only=complete_only, val_fraction=val_fraction,
                   flip=not no_flip, rotation=rotation, scale=scale, shift=shift, photometric=photometric,
                   margin=margin, weight_decay=weight_decay, keypoints=_layout_name(keypoints), size=size,
                   color=color, strict=strict, markup=markup, devices=devices, init=init)
    given = {p.name for p in context.command.params
             if context.get_parameter_source(p.name).name in ("COMMANDLINE", "ENVIRONMENT")}
    changes = {field: value for field, value in options.items()
               if option_name(field).lstrip("-").replace("-", "_") in given}
    settings = settings or []
    twice = sorted({setting.partition("=")[0] for setting in settings} & changes.keys())
    if twice:
        raise KpjaxError(f"--set {twice[0]}: also given as {option_name(twice[0])}; give it once")
    if config_file is not None:
        config = load_config(config_file)
    elif resume and (run_dir / "config.json").is_file():
        config = TrainConfig.load(run_dir)  # the run as it was configured (train checks what may change)
    elif init is not None:
        config = TrainConfig.load(init_run(init))
    else:
        config = TrainConfig()
    config = override(dataclasses.replace(config, **changes), settings)
    if (coordinator, num_processes, process_id) != (None, None, None):
        init_distributed(coordinator, num_processes, process_id)
    result = run_training(config, run_dir, resume=resume)
    val = result.best_val
    summary = f"best epoch {result.best_epoch}"
    if "val_rmse_px" in val:
        summary += f": val mse {val['val_mse']:.3e} mae {val['val_mae']:.4f} rmse {val['val_rmse_px']:.2f}px"
    typer.echo(f"{summary}; run saved to {run_dir}")


DetectSizeOption = Annotated[int, typer.Option(min=64, help="Longer side (px) faces are searched at; "
                                               "raise it to find smaller faces.")]
DetectorOption = Annotated[str, typer.Option(help="Face detector: fast (the frontal Haar cascade) or thorough "
                                            "(frontal and profile cascades, turned faces too; slower, more false faces).")]
PassesOption = Annotated[int, typer.Option(min=1, help="Predictions per face: each pass re-crops the face from "
                                           "the previous pass's keypoints; the last two are averaged.")]


@app.command()
def evaluate(
    data: DataOption = None,
    model: ModelDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    flip_tta: Annotated[bool, typer.Option(
        "--flip-tta", help="Average with the mirrored face's prediction (flip test-time augmentation).")] = False,
    strict: StrictOption = False,
    markup: MarkupOption = None,
    detect: Annotated[bool, typer.Option(
        "--detect", help="End to end on whole photos: kpjax predict's pipeline on each annotated photo, scored by "
        "detection rate, NME (outer-eye normalised), failures (NME > 10%), AUC and ms per photo.")] = False,
    persons: Annotated[str, typer.Option(help="--detect: all, or the val/train persons of kpjax's split "
                                         "(seed --split-seed), to score only persons a model never trained on.")] = "all",
    split_seed: Annotated[int, typer.Option(help="--detect: seed of the person split.")] = 0,
    predictions: Annotated[Optional[list[Path]], typer.Option(
        help="--detect: score these predictions.json files (another pipeline's; repeat for several) instead of "
             "running kpjax.")] = None,
    ced: Annotated[Optional[Path], typer.Option(help="--detect: write the cumulative error curve here (PNG).")] = None,
    passes: PassesOption = 3,
    detect_size: DetectSizeOption = 320,
    detector: DetectorOption = "fast",
):
    """Accuracy of a trained model: on face crops (MSE/MAE, RMSE px, NME, per keypoint) or, with --detect, end
    to end on the photos of any annotated source."""
    if detect:
        _evaluate_photos(data, model, as_json, flip_tta, markup, persons, split_seed, predictions, ced, passes,
                         detector, detect_size)
        return
    from kpjax.evaluate import evaluate_model
    from kpjax.sources import LoadOptions, load_data

    net, config = _load_model(model)
    dataset = load_data(data, LoadOptions(layout=config.layout, size=config.size, color=config.color,
                                          strict=strict, markup=markup))
    metrics = evaluate_model(net, dataset, flip_tta=flip_tta)
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    typer.echo(f"faces {metrics['n']}  mse {metrics['mse']:.4e}  mae {metrics['mae']:.4f}  "
               f"rmse {metrics['rmse_px']:.3f}px  nme {metrics['nme']:.4f}")
    for name, value in metrics["per_keypoint_rmse_px"].items():
        typer.echo(f"  {name:<26} {'-' if value is None else f'{value:.3f}px'}")


def _evaluate_photos(data, model, as_json, flip_tta, markup, persons, split_seed, predictions, ced, passes,
                     detector, detect_size) -> None:
    from kpjax import photo_eval

    if not data:
        raise KpjaxError("--detect needs --data: a source of photos with their landmarks (e.g. a .pts folder)")
    photos = [photo for spec in data
              for photo in photo_eval.select_persons(photo_eval.read_annotated_photos(spec, markup), persons,
                                                     seed=split_seed)]
    if predictions:
        records = []
        for file in predictions:
            try:
                records += json.loads(file.read_text())
            except (OSError, ValueError) as error:
                raise KpjaxError(f"--predictions {file}: unreadable ({error})") from None
    else:
        from kpjax.detect import make_detector
        from kpjax.inference import Predictor

        net, config = _load_model(model)
        predictor = Predictor(net, config, make_detector(detector, detect_size), batch_size=1, passes=passes,
                              flip_tta=flip_tta)
        records = photo_eval.run_pipeline(predictor, photos, progress=sys.stderr.isatty())
    metrics = photo_eval.score(photos, records)
    if ced is not None:
        photo_eval.plot_ced({predictions[0].stem if predictions else "kpjax": metrics["nmes"]}, ced)
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    rows = {"all": metrics, **metrics.get("by_source", {})}
    for name, m in rows.items():
        typer.echo(_photo_line(name, m))


def _photo_line(name: str, m: dict) -> str:
    line = (f"{name}: {m['photos']} photos, found {m['found']}/{m['faces']} faces ({m['detection_rate']:.1%}), "
            f"{m['false_faces_per_photo']:.3f} false faces/photo")
    if m["nme_mean"] is not None:
        line += (f"; NME {m['nme_mean']:.2%} mean, {m['nme_median']:.2%} median, failures {m['failure_rate']:.1%}, "
                 f"AUC@10% {m['auc10']:.3f}, {m['kaggle_px']:.2f} Kaggle px")
    if m["ms_per_photo_median"] is not None:
        line += f"; {m['ms_per_photo_median']:.1f} ms/photo"
    return line


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Photos, folders of photos, or videos.")],
    model: ModelDirOption = None,
    out: Annotated[Path, typer.Option(help="Folder for the overlays and predictions.json/csv.")] = Path("predictions"),
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    no_detect: Annotated[bool, typer.Option("--no-detect", help="Take every image whole as one face crop.")] = False,
    detect_size: DetectSizeOption = 320,
    detector: DetectorOption = "fast",
    passes: PassesOption = 3,
    flip_tta: Annotated[bool, typer.Option(
        "--flip-tta", help="Average with the mirrored face's prediction (flip test-time augmentation).")] = False,
    smooth: Annotated[Optional[float], typer.Option(help="Video: exponential smoothing weight of the newest "
                                                    "frame, in (0, 1].")] = None,
    redetect: Annotated[int, typer.Option(min=1, help="Video: search the whole frame every N frames and when a "
                                          "face is lost, following faces from their keypoints in between; "
                                          "1 searches every frame.")] = 30,
    batch: Annotated[int, typer.Option(min=1, help="Faces per network call.")] = 32,
):
    """Find every face, predict its keypoints in the original pixels, draw them, and write the results.

    A size x size image (a Kaggle crop) is taken as a face already. Exit status 2 when an input is missing or
    unreadable (the others are still done), else 3 when no face is found at all.
    """
    from kpjax.detect import make_detector
    from kpjax.inference import Predictor
    from kpjax.predict import predict_paths

    net, config = _load_model(model)
    predictor = Predictor(net, config, None if no_detect else make_detector(detector, detect_size),
                          batch_size=batch, passes=passes, flip_tta=flip_tta)
    summary = predict_paths(predictor, inputs, out, fmt=fmt, smooth=smooth, redetect=redetect,
                            progress=sys.stderr.isatty(), echo=typer.echo, warn=lambda line: typer.echo(line, err=True))
    typer.echo(f"{summary['images']} images, {summary['videos']} videos, {summary['faces']} faces "
               f"({summary['no_face']} images without a face, {summary['unreadable']} unreadable); "
               f"images in {summary['seconds']:.2f}s, {summary['images_per_second']:.1f} images/s; results in {out}")
    if summary["unreadable"]:
        raise KpjaxError(f"{summary['unreadable']} input(s) missing or unreadable (listed above); "
                         f"the results of the others are in {out}")
    if summary["faces"] == 0:
        raise typer.Exit(3)


@app.command()
def serve(
    model: ModelDirOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8000,
    batch: Annotated[int, typer.Option(min=1, help="Most images, and faces, per network call.")] = 8,
    detect_size: DetectSizeOption = 320,
    detector: DetectorOption = "fast",
    passes: PassesOption = 3,
    max_upload_mb: Annotated[int, typer.Option(min=1, help="Largest request body accepted, MiB.")] = 10,
):
    """A web page (/) that draws the keypoints on a photo, and an HTTP API: POST /v1/keypoints, /docs."""
    from kpjax.serve import serve as run_server  # first: without the serve extra, fail before loading the model
    from kpjax.detect import make_detector
    from kpjax.inference import Predictor

    net, config = _load_model(model)
    predictor = Predictor(net, config, make_detector(detector, detect_size), batch_size=batch, passes=passes)
    run_server(predictor, str(model) if model else "default", host, port, max_upload_mb << 20, echo=typer.echo)


@app.command()
def submit(
    model: Annotated[Path, typer.Argument(help="Run directory of a trained model (Kaggle keypoints).")],
    test: Annotated[Path, typer.Option(help="Kaggle's test.csv.")] = Path("test.csv"),
    lookup: Annotated[Path, typer.Option(help="Kaggle's IdLookupTable.csv.")] = Path("IdLookupTable.csv"),
    out: Annotated[Path, typer.Option(help="Where the submission CSV goes.")] = Path("submission.csv"),
):
    """A Kaggle submission (RowId,Location), checked against the lookup table before it is written."""
    from kpjax.submit import write_submission

    net, config = _load_model(model)
    submission = write_submission(net, config, test, lookup, out)
    typer.echo(f"{len(submission)} rows written to {out}")


@app.command()
def calibrate(
    data: DataOption = None,
    model: ModelDirOption = None,
    persons: Annotated[str, typer.Option(help="Fit on the train persons of kpjax's split (seed --split-seed), "
                                         "keeping the val persons to check it on, or on all.")] = "train",
    split_seed: Annotated[int, typer.Option(help="Seed of the person split.")] = 0,
    strict: StrictOption = False,
    markup: MarkupOption = None,
    reset: Annotated[bool, typer.Option("--reset", help="Remove the run's calibration instead.")] = False,
):
    """Move a trained model's keypoints onto the annotation convention of --data: one offset per keypoint, fitted
    on its label-fitted crops and stored in the run (calibration.json), which every prediction then carries."""
    from kpjax import calibration
    from kpjax.checkpoint import DEFAULT_MODEL, best_progress, find_run, load_model
    from kpjax.evaluate import fit_calibration
    from kpjax.sources import LoadOptions, load_data

    if model is None:  # the shipped model's calibration is part of the installed package
        raise KpjaxError(f"calibrate writes into the run it calibrates: give --model RUN_DIR (for the shipped "
                         f"model, a copy of {DEFAULT_MODEL})")
    run_dir = find_run(model)
    if reset:
        (run_dir / calibration.CALIBRATION_FILE).unlink(missing_ok=True)
        typer.echo(f"{run_dir}: uncalibrated")
        return
    if not data:
        raise KpjaxError("calibrate needs --data: annotated faces in the convention the keypoints should follow")
    net, config = load_model(run_dir, calibrated=False)
    dataset = load_data(data, LoadOptions(layout=config.layout, size=config.size, color=config.color,
                                          strict=strict, markup=markup))
    offset, report = fit_calibration(net, dataset, persons, seed=split_seed)
    step, _ = best_progress(run_dir)
    try:
        path = calibration.save(run_dir, offset, config.layout.names, step, {"data": data, **report})
    except OSError as error:
        raise KpjaxError(f"{run_dir}: cannot write {calibration.CALIBRATION_FILE} ({error.strerror})") from None
    for name, m in ((name, report[name]) for name in ("fitted on", "held out") if name in report):
        typer.echo(f"{name} {m['faces']} faces: rmse {m['rmse_px_before']:.3f} -> {m['rmse_px_after']:.3f}px, "
                   f"nme {m['nme_before']:.4f} -> {m['nme_after']:.4f}")
    for keypoint, (x, y) in zip(config.layout.names, offset):
        typer.echo(f"  {keypoint:<26} {x:+.2f} {y:+.2f} px")
    typer.echo(f"wrote {path}")
    held_out = report.get("held out")
    if held_out and held_out["nme_after"] > held_out["nme_before"]:
        typer.echo(f"warning: the persons kept out fit worse after it (nme {held_out['nme_before']:.4f} -> "
                   f"{held_out['nme_after']:.4f}): their convention differs from the others'; "
                   f"kpjax calibrate --reset removes it", err=True)


@app.command()
def export(
    model: ModelDirOption = None,
    fmt: Annotated[str, typer.Option("--format", help="onnx.")] = "onnx",
    out: Annotated[Path, typer.Option(help="Where the exported model goes.")] = Path("model.onnx"),
):
    """The model as ONNX (uint8 NHWC images in), checked against JAX with onnxruntime before it is written."""
    from kpjax.export import TOLERANCE, export_onnx

    if fmt != "onnx":
        raise KpjaxError(f"--format {fmt}: only onnx is supported")
    net, config = _load_model(model)
    difference = export_onnx(net, config, out)
    typer.echo(f"wrote {out}; onnxruntime matches JAX within {difference:.1e} (tolerance {TOLERANCE:g})")


@app.command()
def bench(
    model: Annotated[str, typer.Option(help="Model name from the registry.")] = "seed",
    batch: Annotated[int, typer.Option(min=1)] = 64,
    steps: Annotated[int, typer.Option(min=1, help="Train steps per timed repeat.")] = 10,
    repeats: Annotated[int, typer.Option(min=1)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    devices: Annotated[Optional[str], typer.Option(
        help="Data-parallel scaling instead: device counts such as 1,2,4,8, --batch images per device.")] = None,
):
    """Training and inference throughput on this machine's JAX backend (CPU, GPU or TPU), with its load average.

    The same network in Keras and PyTorch: benchmarks/peers_bench.py in the source checkout.
    """
    from kpjax.bench import busy_warning, format_conditions, format_scaling, format_table, run_bench, run_scaling
    from kpjax.models import MODELS

    if model not in MODELS:
        raise KpjaxError(f"--model {model}: unknown model; choose one of {', '.join(sorted(MODELS))}")
    if devices is not None:
        counts = [int(n) for n in devices.split(",") if n.strip().isdigit() and int(n) > 0]
        if len(counts) != len(devices.split(",")):
            raise KpjaxError(f"--devices {devices}: expected device counts such as 1,2,4,8")
        results = run_scaling(counts, model, batch_size=batch, steps=steps, repeats=repeats)
        typer.echo(json.dumps(results) if as_json else format_scaling(results))
    else:
        results = [run_bench(model, batch_size=batch, steps=steps, repeats=repeats)]
        if as_json:
            typer.echo(json.dumps(results[0]))
        else:
            typer.echo(f"backend {results[0]['backend']} ({results[0]['device']}), model {model}, batch {batch}")
            typer.echo(format_table({"kpjax": results[0]}))
            typer.echo(format_conditions(results[0]))
    warning = busy_warning(results)
    if warning:
        typer.echo(warning, err=True)


data_app = typer.Typer(no_args_is_help=True, help="Inspect and convert face datasets.")
app.add_typer(data_app, name="data")


@data_app.command("stats")
def data_stats(
    sources: Annotated[list[str], typer.Argument(help="Data sources, as for --data.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    reference: Annotated[Optional[Path], typer.Option(
        help="Kaggle label file to compare with (default: built-in statistics of Kaggle's complete rows).")] = None,
    strict: StrictOption = False,
    markup: MarkupOption = None,
):
    """How the converted faces are distributed, against Kaggle's own keypoint statistics."""
    from kpjax.sources import LoadOptions
    from kpjax.stats import data_stats as compute_stats, format_stats

    stats = compute_stats(sources, LoadOptions(strict=strict, markup=markup), reference=reference)
    typer.echo(json.dumps(stats) if as_json else format_stats(stats))


@data_app.command("convert")
def data_convert(
    sources: Annotated[list[str], typer.Argument(help="Data sources, as for --data.")],
    out: Annotated[Path, typer.Option(
        help="Kaggle-format training CSV to write, or a .npz that any kpjax run loads with --data.")
    ] = Path("training.csv"),
    strict: StrictOption = False,
    markup: MarkupOption = None,
):
    """Write faces from any source as a Kaggle-format training.csv (96x96 grey, 15 keypoints) or a .npz.

    The .npz is the converted faces as they are (with the persons behind the split),
    compressed: convert once, then train on another machine with --data faces.npz.
    """
    from kpjax.sources import LoadOptions, convert_sources

    rows = convert_sources(sources, out, LoadOptions(strict=strict, markup=markup))
    typer.echo(f"wrote {rows} faces to {out}")


def _without_closed_loop_reports(hook):
    """``sys.unraisablehook`` less the "Event loop is closed" errors of callbacks that outlive Orbax's loop."""
    def unraisable(report):
        if not (isinstance(report.exc_value, RuntimeError) and str(report.exc_value) == "Event loop is closed"):
            hook(report)
    return unraisable


def run(args: list[str]) -> int:
    """The command line ``args``, run; its exit status. Every failure is one line on stderr, never a traceback:

    2 for a mistake in the input and for what the environment refuses (disk full, read-only, permissions),
    naming the path; 3 when ``predict`` finds no face; 130 when training was interrupted and can be resumed.
    """
    import logging

    from kpjax.train import TrainingInterrupted

    # Orbax's worker threads log the failure that is reported here once more, with their tracebacks; after a
    # failed checkpoint write, TensorStore's threads and asyncio report it again to an event loop already closed.
    for name in ("absl", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    sys.unraisablehook = _without_closed_loop_reports(sys.unraisablehook)
    click = sys.modules[typer.BadParameter.__module__]  # click's exceptions, vendored by typer >= 0.2x

    try:
        return app(args=args, prog_name="kpjax", standalone_mode=False) or 0
    except KpjaxError as error:
        typer.echo(f"error: {error}", err=True)
    except click.UsageError as error:
        if isinstance(error, getattr(click, "NoArgsIsHelpError", ())):  # the help, asked for by no arguments
            error.show()
        else:
            command = f"{error.ctx.command_path}: " if error.ctx else ""
            typer.echo(f"error: {command}{error.format_message()}", err=True)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 130
    except TrainingInterrupted as stopped:
        typer.echo(str(stopped), err=True)
        return 130
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        typer.echo(f"error: {where}{error.strerror or error}", err=True)
    return 2


def main() -> None:
    """Entry point of the ``kpjax`` command."""
    from kpjax.runtime import ensure_hugepage_malloc

    ensure_hugepage_malloc(["-m", "kpjax", *sys.argv[1:]])
    sys.exit(run(sys.argv[1:]))
