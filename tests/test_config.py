"""Recipes as config files: ``kpjax train --config FILE --set KEY=VALUE``, a TrainConfig that checks itself, and
the run writer that records a run."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import kpjax.train
from kpjax.cli import run
from kpjax.config import LEGACY_DEFAULTS, TrainConfig, load_config, override
from kpjax.errors import KpjaxError
from kpjax.run_writer import RunWriter
from kpjax.train import TrainResult

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "experiments" / "results"


@pytest.fixture
def built(monkeypatch) -> list[TrainConfig]:
    """The configs ``kpjax train`` hands to training, which is not run."""
    configs = []

    def record(config, run_dir, *, resume=False):
        configs.append(config)
        return TrainResult(run_dir, 1, {}, [])

    monkeypatch.setattr(kpjax.train, "train", record)
    return configs


def by_source_name(config: TrainConfig) -> dict:
    """The config with each data source by its name: the recorded runs read them from another root."""
    return {**dataclasses.asdict(config), "data": [Path(spec).name for spec in config.data]}


@pytest.mark.parametrize("recipe, result", [("seed", "seed"), ("best", "best"), ("photo", "photo")])
def test_config_file_builds_the_recorded_recipe(built, recipe, result):
    assert run(["train", "--config", str(CONFIGS / f"{recipe}.py")]) == 0
    saved = json.loads((RESULTS / f"{result}.json").read_text())["config"]
    recorded = TrainConfig.from_json(json.dumps(saved))
    unrecorded = set(LEGACY_DEFAULTS) - set(saved)  # settings added after the run: its recipe did not have them
    assert ({k: v for k, v in by_source_name(built[0]).items() if k not in unrecorded}
            == {k: v for k, v in by_source_name(recorded).items() if k not in unrecorded})
    assert built[0].data[0] == "../shared/data/youtube-faces-68"  # the shared data, from the project root


def test_each_config_file_loads_and_its_docstring_is_its_command():
    for path in sorted(CONFIGS.glob("*.py")):
        assert isinstance(load_config(path), TrainConfig)
        assert f"    kpjax train --config configs/{path.name} " in ast.get_docstring(ast.parse(path.read_text()))


def test_options_and_set_override_the_file_and_may_not_both_set_a_field(built, capsys):
    best = CONFIGS / "best.py"
    assert run(["train", "--config", str(best), "--epochs", "3", "--no-flip", "--set", "split=row",
                "--set", "data=a.csv,b.npz"]) == 0
    assert built[0] == dataclasses.replace(load_config(best), epochs=3, flip=False, split="row",
                                           data=["a.csv", "b.npz"])
    assert run(["train", "--config", str(best), "--epochs", "3", "--set", "epochs=4"]) == 2
    assert capsys.readouterr().err.strip() == "error: --set epochs: also given as --epochs; give it once"


def test_set_reads_each_field_by_its_type_and_round_trips():
    config = TrainConfig(data=["a.csv", "synthetic:50"], model="heatmap", keypoints="ibug68", size=128, color=True,
                         epochs=7, batch_size=8, learning_rate=2e-3, schedule="cosine", weight_decay=1e-4,
                         flip=False, rotation=15.0, scale=0.15, shift=6.0, photometric=True, margin=24,
                         val_fraction=0.3, split="row", complete_only=True, strict=True, markup="fgnet", seed=3,
                         split_seed=0, devices="all")

    def text(value) -> str:
        if isinstance(value, list):
            return ",".join(value)
        return str(value).lower() if value is None or isinstance(value, bool) else str(value)  # none, true, false

    settings = [f"{key}={text(value)}" for key, value in dataclasses.asdict(config).items()]
    assert override(TrainConfig(), settings) == config
    assert override(config, ["markup=none", "split_seed=null", "devices=2"]).markup is None
    assert override(config, ["devices=2"]).devices == 2


@pytest.mark.parametrize("setting, message", [
    ("epochs=ten", "--set epochs=ten: expected an integer"),
    ("flip=maybe", "--set flip=maybe: expected true or false"),
    ("split_seed=x", "--set split_seed=x: expected an integer or none"),
    ("epochs=0", "--set epochs=0: expected at least 1"),
    ("split=rows", "--set split=rows: expected group or row"),
    ("model=resnet9000", "--set model=resnet9000: unknown model; choose one of"),
    ("learnin_rate=1", "--set learnin_rate: unknown key; choose one of data, model,"),
    ("epochs", "--set epochs: expected KEY=VALUE"),
])
def test_a_bad_setting_is_one_line_naming_the_key(setting, message, capsys):
    assert run(["train", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("field, value, message", [
    ("model", "resnet9000", "--model resnet9000: unknown model; choose one of compact, heatmap,"),
    ("keypoints", "dlib", "--keypoints dlib: expected one of kaggle, ibug68"),
    ("size", 8, "--size 8: expected at least 16 pixels"),
    ("epochs", 0, "--epochs 0: expected at least 1"),
    ("batch_size", 0, "--batch 0: expected at least 1"),
    ("learning_rate", -1.0, "--lr -1.0: expected 0 or more"),
    ("schedule", "linear", "--schedule linear: expected constant or cosine"),
    ("loss", "l2", "--loss l2: expected mse or wing"),
    ("rotation", -5.0, "--rotation -5.0: expected 0 or more degrees"),
    ("margin", -1, "--margin -1: expected 0 or more pixels"),
    ("val_fraction", 1.0, "--val-fraction 1.0: expected 0 to 0.95"),
    ("split", "person", "--set split=person: expected group or row"),
    ("devices", 0, "--devices 0: expected all or a positive number of devices"),
    ("devices", "some", "--devices some: expected all or a positive number of devices"),
    ("epochs", "45", "--epochs '45': expected an integer"),
    ("flip", 1, "--no-flip 1: expected true or false"),
    ("data", "a.csv", "--data 'a.csv': expected a list of strings"),
])
def test_train_config_refuses_what_no_run_can_use(field, value, message):
    with pytest.raises(KpjaxError) as error:
        TrainConfig(**{field: value})
    assert str(error.value).startswith(message)


def test_train_config_takes_devices_as_the_option_gives_them():
    assert TrainConfig(devices="4").devices == 4 and TrainConfig(devices="all").devices == "all"
    assert TrainConfig(learning_rate=1).learning_rate == 1  # an integer is a number


def test_cli_option_mistakes_are_the_configs(capsys):
    for args, message in [(["--schedule", "linear"], "--schedule linear: expected constant or cosine"),
                          (["--val-fraction", "0.99"], "--val-fraction 0.99: expected 0 to 0.95"),
                          (["--loss", "l2"], "--loss l2: expected mse or wing"),
                          (["--devices", "0"], "--devices 0: expected all or a positive number of devices")]:
        assert run(["train", *args]) == 2
        assert capsys.readouterr().err.strip() == f"error: {message}"


def test_a_saved_config_that_no_longer_checks_names_its_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "gone", "epochs": 3}))
    with pytest.raises(KpjaxError, match=f"^{tmp_path / 'config.json'}: --model gone: unknown model"):
        TrainConfig.load(tmp_path)


@pytest.mark.parametrize("source, message", [
    ("from kpjax.config import TrainConfig\n", "{path}: no get_config() returning a TrainConfig"),
    ("def get_config():\n    return {'epochs': 3}\n", "{path}: get_config() returned dict, not a TrainConfig"),
    ("def get_config(:\n", "{path}: SyntaxError: "),
    ("def get_config():\n    return TrainConfig(epochs=3)\n", "{path}:2: NameError: name 'TrainConfig' is not defined"),
    ("from kpjax.config import TrainConfig\n\ndef get_config():\n    return TrainConfig(epochs=-3)\n",
     "{path}: --epochs -3: expected at least 1"),
])
def test_a_broken_config_file_is_one_line_naming_it(tmp_path, capsys, source, message):
    path = tmp_path / "recipe.py"
    path.write_text(source)
    assert run(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(path=path)) and len(err.splitlines()) == 1, err


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert run(["train", "--config", str(tmp_path / "missing.py")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --config {tmp_path / 'missing.py'}: no such file"


def test_a_config_builds_on_another(tmp_path):
    (tmp_path / "long.py").write_text(
        "import dataclasses\nfrom pathlib import Path\nfrom kpjax.config import load_config\n\n"
        f"def get_config():\n    return dataclasses.replace(load_config({str(CONFIGS / 'best.py')!r}), epochs=90)\n")
    assert load_config(tmp_path / "long.py") == dataclasses.replace(load_config(CONFIGS / "best.py"), epochs=90)


def test_train_with_a_config_file_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--config", str(CONFIGS / "seed.py"), "--set", "data=synthetic:120", "--epochs", "1",
            "--batch", "16", "--run-dir", str(run_dir)]
    assert run(args) == 0
    expected = dataclasses.replace(load_config(CONFIGS / "seed.py"), data=["synthetic:120"], epochs=1, batch_size=16)
    assert TrainConfig.load(run_dir) == expected
    assert run([*args, "--resume"]) == 0  # the same command continues the run: the file and options unchanged
    assert "finished its 1 epochs" in capsys.readouterr().out


def test_the_run_writer_writes_only_in_the_primary_process(tmp_path, monkeypatch):
    import jax

    monkeypatch.setattr(jax, "process_index", lambda: 1)
    lines = []
    with RunWriter(tmp_path / "run", log=lines.append) as writer:
        writer.write_config(TrainConfig())
        writer.keep_epochs(0)
        writer.write_epoch({"epoch": 1, "train_mse": 0.1, "train_mae": 0.2, "images_per_second": 9.0, "best": True},
                           epochs=1)
        writer.plot_learning_curve()
    assert list((tmp_path / "run").iterdir()) == [] and lines == []
    assert [h["epoch"] for h in writer.history] == [1]  # every process knows the epochs


def test_the_run_writer_cuts_metrics_to_the_resumed_checkpoints_epochs(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    epochs = [{"epoch": e, "train_mse": 0.1 / e, "train_mae": 0.2, "images_per_second": 9.0, "best": True}
              for e in (1, 2, 3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs) + '{"epoch": 4, "tr')
    lines = []
    with RunWriter(run_dir, log=lines.append) as writer:
        writer.keep_epochs(2)
        assert writer.history == epochs[:2]
        writer.write_epoch({**epochs[2], "epoch": 3}, epochs=3)
        writer.plot_learning_curve()
    assert [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == epochs
    assert lines == ["epoch   3/3  train mse 3.333e-02 mae 0.2000  9 img/s  *best"]
    assert (run_dir / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
