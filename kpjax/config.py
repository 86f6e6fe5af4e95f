"""Training configuration: one dataclass, saved beside every run so it can be repeated, and checked when it is
made, so a mistake is reported before any data is read, whether it came from an option, --set or a config file.

A config file is a Python file whose ``get_config()`` returns a ``TrainConfig`` (``configs/*.py``, as flax's
examples and big_vision keep theirs); ``kpjax train --config FILE`` and the experiments load it with
``load_config``, and ``override`` applies ``--set key=value`` to it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import traceback
import types
import typing
from pathlib import Path

from kpjax.errors import KpjaxError
from kpjax.keypoints import LAYOUTS, Layout
from kpjax.models import MODELS

# The train options whose names are not their field's: the rest are ``--`` + the field, dashed.
# A field without an option of its own is set with ``--set``.
OPTION_NAMES = {"batch_size": "--batch", "learning_rate": "--lr", "flip": "--no-flip", "split": "--set split"}
SCHEDULES = ("constant", "cosine")
SPLITS = ("group", "row")
LOSSES = ("mse", "wing")
MAX_VAL_FRACTION = 0.95
BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}

# Settings added after runs were saved without them, at the value those runs had: their models lack the part.
LEGACY_DEFAULTS = {"error_head": False}


def option_name(field: str) -> str:
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


class ConfigError(KpjaxError):
    """A setting out of its range: says which one (by its option) and what it accepts."""

    def __init__(self, field: str, value, expected: str):
        self.field, self.expected = field, expected
        option = option_name(field)
        given = f"{option}={value}" if option.startswith("--set ") else f"{option} {value}"
        super().__init__(f"{given}: {expected}")


@dataclasses.dataclass
class TrainConfig:
    data: list[str] = dataclasses.field(default_factory=list)
    model: str = "seed"
    keypoints: str = "kaggle"  # layout name: "kaggle" (15 points) or "ibug68"
    size: int = 96
    color: bool = False
    epochs: int = 150
    batch_size: int = 64
    learning_rate: float = 1e-3
    schedule: str = "constant"  # or "cosine": decay to 0 over the run after a short warm-up
    loss: str = "mse"  # the keypoints' loss: "mse" (the reference's) or "wing" (kpjax.train_step.masked_wing)
    weight_decay: float = 0.0
    flip: bool = True
    rotation: float = 0.0  # degrees, uniform in +-rotation
    scale: float = 0.0  # log-uniform zoom in [1/(1+scale), 1+scale]
    shift: float = 0.0  # pixels, uniform in +-shift per axis
    photometric: bool = False  # random contrast, brightness and blur
    margin: int = 0  # context pixels a side around each training crop, so rotation, scale and shift sample real image
    val_fraction: float = 0.2
    split: str = "group"  # "group": all faces of a person on one side; "row": faces split independently
    complete_only: bool = False
    strict: bool = False
    markup: str | None = None  # 68-point markup of .pts sources: "ibug" or "fgnet"; None detects it
    seed: int = 0
    split_seed: int | None = None  # seed of the validation split; None: seed. Fixed, runs of several seeds share it
    devices: int | str = 1  # devices per process for data parallelism, or "all"
    error_head: bool = True  # heatmap models: learn each keypoint's expected error beside it
    init: str | None = None  # start from this run's trained weights: a run directory, or "default" (the shipped model)

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.keypoints]

    @property
    def channels(self) -> int:
        return 3 if self.color else 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**LEGACY_DEFAULTS, **{k: v for k, v in json.loads(text).items() if k in known}})

    @classmethod
    def load(cls, run_dir: Path) -> TrainConfig:
        path = Path(run_dir) / "config.json"
        try:
            return cls.from_json(path.read_text())
        except (ValueError, TypeError) as error:
            raise KpjaxError(f"{path}: unreadable run configuration ({error})") from None
        except ConfigError as error:
            raise KpjaxError(f"{path}: {error}") from None

    def __post_init__(self):
        if isinstance(self.devices, str) and self.devices.isdigit():  # as --devices gives it
            self.devices = int(self.devices)
        for field, kind in _field_types().items():
            if not _is_a(getattr(self, field), kind):
                raise ConfigError(field, repr(getattr(self, field)), f"expected {_describe(kind)}")
        rules = {
            "model": (self.model in MODELS, f"unknown model; choose one of {', '.join(sorted(MODELS))}"),
            "keypoints": (self.keypoints in LAYOUTS, f"expected one of {', '.join(LAYOUTS)}"),
            "size": (self.size >= 16, "expected at least 16 pixels"),
            "epochs": (self.epochs >= 1, "expected at least 1"),
            "batch_size": (self.batch_size >= 1, "expected at least 1"),
            "learning_rate": (self.learning_rate >= 0, "expected 0 or more"),
            "schedule": (self.schedule in SCHEDULES, f"expected {' or '.join(SCHEDULES)}"),
            "loss": (self.loss in LOSSES, f"expected {' or '.join(LOSSES)}"),
            "weight_decay": (self.weight_decay >= 0, "expected 0 or more"),
            "rotation": (self.rotation >= 0, "expected 0 or more degrees"),
            "scale": (self.scale >= 0, "expected 0 or more"),
            "shift": (self.shift >= 0, "expected 0 or more pixels"),
            "margin": (self.margin >= 0, "expected 0 or more pixels"),
            "val_fraction": (0 <= self.val_fraction <= MAX_VAL_FRACTION, f"expected 0 to {MAX_VAL_FRACTION}"),
            "split": (self.split in SPLITS, f"expected {' or '.join(SPLITS)}"),
            "devices": (self.devices == "all" or isinstance(self.devices, int) and self.devices >= 1,
                        "expected all or a positive number of devices"),
        }
        for field, (valid, expected) in rules.items():
            if not valid:
                raise ConfigError(field, getattr(self, field), expected)


def _field_types() -> dict[str, typing.Any]:
    """Each field's type, as written in the class (``str | None``, ``list[str]``, ...)."""
    return typing.get_type_hints(TrainConfig)


def _options(kind) -> tuple:
    """The types a field accepts: those of a union, or the one."""
    return typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)


def _is_a(value, kind) -> bool:
    def one(option) -> bool:
        if option is bool:
            return isinstance(value, bool)
        if option is float:  # an integer is a number too
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if option is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if option == list[str]:
            return isinstance(value, list) and all(isinstance(item, str) for item in value)
        return isinstance(value, option)

    return any(one(option) for option in _options(kind))


def _describe(kind) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             list[str]: "a list of strings", type(None): "none"}
    return " or ".join(names[option] for option in _options(kind))


def _parse(text: str, kind):
    """``--set``'s text as a value of ``kind``: lists are comma-separated, ``none`` is None where allowed."""
    options = _options(kind)
    if type(None) in options and text.lower() in ("none", "null"):
        return None
    for option in options:
        if option is bool and text.lower() in BOOLEANS:
            return BOOLEANS[text.lower()]
        if option == list[str]:
            return [item for item in text.split(",") if item]
        if option in (int, float, str):
            try:
                return option(text)
            except ValueError:
                pass
    raise ValueError(f"expected {_describe(kind)}")


def override(config: TrainConfig, settings: list[str], given_by: str = "--set") -> TrainConfig:
    """``config`` with ``key=value`` settings applied, each value read as its field's type; an error names the setting
    after ``given_by``, where the user wrote it."""
    kinds = _field_types()
    changes, texts = {}, {}
    for setting in settings:
        key, equals, text = setting.partition("=")
        if not equals:
            raise KpjaxError(f"{given_by} {setting}: expected KEY=VALUE")
        if key not in kinds:
            raise KpjaxError(f"{given_by} {key}: unknown key; choose one of {', '.join(kinds)}")
        try:
            changes[key] = _parse(text, kinds[key])
        except ValueError as error:
            raise KpjaxError(f"{given_by} {setting}: {error}") from None
        texts[key] = text
    try:
        return dataclasses.replace(config, **changes)
    except ConfigError as error:
        if error.field not in texts:
            raise
        raise KpjaxError(f"{given_by} {error.field}={texts[error.field]}: {error.expected}") from None


def load_config(path: Path | str) -> TrainConfig:
    """The ``TrainConfig`` that ``get_config()`` of the Python file ``path`` returns."""
    path = Path(path)
    if not path.is_file():
        raise KpjaxError(f"--config {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"kpjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise KpjaxError("no get_config() returning a TrainConfig")
        config = module.get_config()
    except KpjaxError as error:
        raise KpjaxError(f"{path}: {error}") from None
    except Exception as error:  # the file's own mistake (syntax, a name, a type), in one line with its place
        frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(path)]
        where = f"{path}:{frames[-1].lineno}" if frames else str(path)
        raise KpjaxError(f"{where}: {type(error).__name__}: {error}") from None
    if not isinstance(config, TrainConfig):
        raise KpjaxError(f"{path}: get_config() returned {type(config).__name__}, not a TrainConfig")
    return config
