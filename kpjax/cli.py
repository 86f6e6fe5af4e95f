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
ModelDirOption = Annotated[Optional[Path], typer.Option("--model", help="Run directory of a trained model.")]


def _load_model(run_dir: Optional[Path]):
    from kpjax.checkpoint import load_model

    if run_dir is None:
        raise KpjaxError("--model: no run directory given (train one with: kpjax train --run-dir DIR)")
    return load_model(run_dir)


@app.command()
def train(
    data: DataOption = None,
    epochs: Annotated[int, typer.Option(min=1)] = 150,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    model: Annotated[str, typer.Option(help="Model name from the registry.")] = "seed",
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    schedule: Annotated[str, typer.Option(help="constant or cosine.")] = "constant",
    seed: int = 0,
    run_dir: Annotated[Path, typer.Option(help="Where config, split, metrics and checkpoints go.")] = Path("runs/latest"),
    resume: Annotated[bool, typer.Option(help="Continue the run in --run-dir from its latest checkpoint.")] = False,
    complete_only: Annotated[bool, typer.Option(help="Drop faces with any missing keypoint (the seed's choice).")] = False,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.95)] = 0.2,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="Turn off horizontal-flip augmentation.")] = False,
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
                         schedule=schedule, seed=seed, complete_only=complete_only, val_fraction=val_fraction,
                         flip=not no_flip, devices=parse_devices(devices))
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
):
    """Accuracy of a trained model: the seed's MSE/MAE, RMSE in pixels, NME and per-keypoint RMSE."""
    from kpjax.evaluate import evaluate_model
    from kpjax.keypoints import LAYOUTS
    from kpjax.sources import LoadOptions, load_data

    net, config = _load_model(model)
    dataset = load_data(data, LoadOptions(layout=LAYOUTS[config.keypoints], size=config.size, color=config.color))
    metrics = evaluate_model(net, dataset)
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    typer.echo(f"faces {metrics['n']}  mse {metrics['mse']:.4e}  mae {metrics['mae']:.4f}  "
               f"rmse {metrics['rmse_px']:.3f}px  nme {metrics['nme']:.4f}")
    for name, value in metrics["per_keypoint_rmse_px"].items():
        typer.echo(f"  {name:<26} {'-' if value is None else f'{value:.3f}px'}")


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Face crops (any size or colour).")],
    model: ModelDirOption = None,
    out: Annotated[Path, typer.Option(help="Folder for NAME.json and the overlay NAME.png.")] = Path("predictions"),
):
    """Keypoints of face crops, in each input image's pixels, with an overlay image."""
    from kpjax.predict import predict_files

    net, config = _load_model(model)
    results = predict_files(net, config, images, out)
    for result in results:
        typer.echo(json.dumps(result))


@app.command()
def bench(
    model: Annotated[str, typer.Option(help="Model name from the registry.")] = "seed",
    batch: Annotated[int, typer.Option(min=1)] = 64,
    steps: Annotated[int, typer.Option(min=1, help="Train steps per timed repeat.")] = 10,
    repeats: Annotated[int, typer.Option(min=1)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Training and inference throughput on this machine's JAX backend (CPU, GPU or TPU)."""
    from kpjax.bench import format_table, run_bench
    from kpjax.models import MODELS

    if model not in MODELS:
        raise KpjaxError(f"--model {model}: unknown model; choose one of {', '.join(sorted(MODELS))}")
    result = run_bench(model, batch_size=batch, steps=steps, repeats=repeats)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"backend {result['backend']} ({result['device']}), model {model}, batch {batch}")
        typer.echo(format_table({"kpjax": result}))


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit status 2, never a traceback."""
    from kpjax.train import TrainingInterrupted

    try:
        app()
    except KpjaxError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except TrainingInterrupted as stopped:
        typer.echo(str(stopped), err=True)
        sys.exit(130)
