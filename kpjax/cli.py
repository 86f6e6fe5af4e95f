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
SizeOption = Annotated[int, typer.Option(min=16, help="Side of the square face frame, pixels.")]
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
    data: DataOption = None,
    epochs: Annotated[int, typer.Option(min=1)] = 150,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    model: Annotated[str, typer.Option(help="Model name from the registry.")] = "seed",
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    schedule: Annotated[str, typer.Option(help="constant or cosine.")] = "constant",
    seed: Annotated[int, typer.Option(help="Seed of the model's initialisation, batch order and augmentation.")] = 0,
    split_seed: Annotated[Optional[int], typer.Option(
        help="Seed of the validation split (default: --seed); fix it to compare or ensemble runs of several seeds.")] = None,
    run_dir: Annotated[Path, typer.Option(help="Where config, split, metrics and checkpoints go.")] = Path("runs/latest"),
    resume: Annotated[bool, typer.Option(help="Continue the run in --run-dir from its latest checkpoint.")] = False,
    complete_only: Annotated[bool, typer.Option(help="Drop faces with any missing keypoint (the seed's choice).")] = False,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.95)] = 0.2,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="Turn off horizontal-flip augmentation.")] = False,
    rotation: Annotated[float, typer.Option(min=0.0, help="Augment: random rotation, +-degrees.")] = 0.0,
    scale: Annotated[float, typer.Option(min=0.0, help="Augment: random zoom, +-fraction (log-uniform).")] = 0.0,
    shift: Annotated[float, typer.Option(min=0.0, help="Augment: random shift, +-pixels.")] = 0.0,
    photometric: Annotated[bool, typer.Option(help="Augment: random contrast, brightness and blur.")] = False,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="AdamW weight decay (0: plain Adam).")] = 0.0,
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
    """Train a keypoint model; the best-validation and latest checkpoints go to --run-dir."""
    from kpjax.config import TrainConfig
    from kpjax.distributed import init_distributed, parse_devices
    from kpjax.models import MODELS
    from kpjax.train import train as run_training

    if model not in MODELS:
        raise KpjaxError(f"--model {model}: unknown model; choose one of {', '.join(sorted(MODELS))}")
    if schedule not in ("constant", "cosine"):
        raise KpjaxError(f"--schedule {schedule}: expected constant or cosine")
    config = TrainConfig(data=data or [], model=model, epochs=epochs, batch_size=batch, learning_rate=lr,
                         schedule=schedule, seed=seed, split_seed=split_seed, complete_only=complete_only, val_fraction=val_fraction,
                         flip=not no_flip, rotation=rotation, scale=scale, shift=shift, photometric=photometric,
                         weight_decay=weight_decay, keypoints=_layout_name(keypoints), size=size, color=color,
                         strict=strict, markup=markup, devices=parse_devices(devices))
    if (coordinator, num_processes, process_id) != (None, None, None):
        init_distributed(coordinator, num_processes, process_id)
    result = run_training(config, run_dir, resume=resume)
    val = result.best_val
    summary = f"best epoch {result.best_epoch}"
    if "val_rmse_px" in val:
        summary += f": val mse {val['val_mse']:.3e} mae {val['val_mae']:.4f} rmse {val['val_rmse_px']:.2f}px"
    typer.echo(f"{summary}; run saved to {run_dir}")


@app.command()
def evaluate(
    data: DataOption = None,
    model: ModelDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    flip_tta: Annotated[bool, typer.Option(
        "--flip-tta", help="Average with the mirrored face's prediction (flip test-time augmentation).")] = False,
    strict: StrictOption = False,
    markup: MarkupOption = None,
):
    """Accuracy of a trained model: the seed's MSE/MAE, RMSE in pixels, NME and per-keypoint RMSE."""
    from kpjax.evaluate import evaluate_model
    from kpjax.keypoints import LAYOUTS
    from kpjax.sources import LoadOptions, load_data

    net, config = _load_model(model)
    dataset = load_data(data, LoadOptions(layout=LAYOUTS[config.keypoints], size=config.size, color=config.color,
                                          strict=strict, markup=markup))
    metrics = evaluate_model(net, dataset, flip_tta=flip_tta)
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    typer.echo(f"faces {metrics['n']}  mse {metrics['mse']:.4e}  mae {metrics['mae']:.4f}  "
               f"rmse {metrics['rmse_px']:.3f}px  nme {metrics['nme']:.4f}")
    for name, value in metrics["per_keypoint_rmse_px"].items():
        typer.echo(f"  {name:<26} {'-' if value is None else f'{value:.3f}px'}")


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Photos, folders of photos, or videos.")],
    model: ModelDirOption = None,
    out: Annotated[Path, typer.Option(help="Folder for the overlays and predictions.json/csv.")] = Path("predictions"),
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    no_detect: Annotated[bool, typer.Option("--no-detect", help="Take every image whole as one face crop.")] = False,
    detect_size: Annotated[int, typer.Option(min=64, help="Longer side (px) faces are searched at; "
                                             "raise it to find smaller faces.")] = 320,
    smooth: Annotated[Optional[float], typer.Option(help="Video: exponential smoothing weight of the newest "
                                                    "frame, in (0, 1].")] = None,
    redetect: Annotated[int, typer.Option(min=1, help="Video: search the whole frame every N frames and when a "
                                          "face is lost, following faces from their keypoints in between; "
                                          "1 searches every frame.")] = 30,
    batch: Annotated[int, typer.Option(min=1, help="Faces per network call.")] = 32,
):
    """Find every face, predict its keypoints in the original pixels, draw them, and write the results.

    A size x size image (a Kaggle crop) is taken as a face already. Exit status 3 when no face is found at all.
    """
    from kpjax.detect import FaceDetector
    from kpjax.predict import Predictor, predict_paths

    net, config = _load_model(model)
    predictor = Predictor(net, config, None if no_detect else FaceDetector(detect_size), batch_size=batch)
    summary = predict_paths(predictor, inputs, out, fmt=fmt, smooth=smooth, redetect=redetect,
                            progress=sys.stderr.isatty(), echo=typer.echo)
    typer.echo(f"{summary['images']} images, {summary['videos']} videos, {summary['faces']} faces "
               f"({summary['no_face']} images without a face, {summary['unreadable']} unreadable); "
               f"images in {summary['seconds']:.2f}s, {summary['images_per_second']:.1f} images/s; results in {out}")
    if summary["faces"] == 0:
        raise typer.Exit(3)


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
    peers: Annotated[bool, typer.Option(
        "--peers", help="Also run the seed CNN in Keras and PyTorch (benchmarks/peers), alternating processes.")] = False,
    rounds: Annotated[int, typer.Option(min=1, help="With --peers: alternated rounds, figures are their medians.")] = 3,
):
    """Training and inference throughput on this machine's JAX backend (CPU, GPU or TPU)."""
    from kpjax.bench import format_peers, format_scaling, format_table, run_bench, run_peers, run_scaling
    from kpjax.models import MODELS

    if model not in MODELS:
        raise KpjaxError(f"--model {model}: unknown model; choose one of {', '.join(sorted(MODELS))}")
    if peers:
        if model != "seed" or devices is not None:
            raise KpjaxError("--peers: the peers implement the seed model on one device; drop --model and --devices")
        result = run_peers(rounds, batch_size=batch, steps=steps, repeats=repeats)
        typer.echo(json.dumps(result) if as_json else format_peers(result))
        return
    if devices is not None:
        counts = [int(n) for n in devices.split(",") if n.strip().isdigit() and int(n) > 0]
        if len(counts) != len(devices.split(",")):
            raise KpjaxError(f"--devices {devices}: expected device counts such as 1,2,4,8")
        rows = run_scaling(counts, model, batch_size=batch, steps=steps, repeats=repeats)
        typer.echo(json.dumps(rows) if as_json else format_scaling(rows))
        return
    result = run_bench(model, batch_size=batch, steps=steps, repeats=repeats)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"backend {result['backend']} ({result['device']}), model {model}, batch {batch}")
        typer.echo(format_table({"kpjax": result}))


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
    from kpjax.sources import LoadOptions
    from kpjax.sources.convert import convert_sources

    rows = convert_sources(sources, out, LoadOptions(strict=strict, markup=markup))
    typer.echo(f"wrote {rows} faces to {out}")


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit status 2, never a traceback."""
    from kpjax.runtime import ensure_hugepage_malloc

    ensure_hugepage_malloc(["-m", "kpjax", *sys.argv[1:]])
    from kpjax.train import TrainingInterrupted

    try:
        app()
    except KpjaxError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except TrainingInterrupted as stopped:
        typer.echo(str(stopped), err=True)
        sys.exit(130)
