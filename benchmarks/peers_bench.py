"""The seed CNN in kpjax against the same network in Keras and PyTorch (benchmarks/peers), one process per run.

    python benchmarks/peers_bench.py --rounds 3 [--batch 64] [--steps 10] [--repeats 5] [--json]

Runs alternate (kpjax, keras, torch, kpjax, ...) so that the load of a shared
machine drifts over all of them alike. kpjax runs as ``kpjax bench`` measures
it (``python -m kpjax.bench all``), each peer as ``peers/NAME_seed.py``; all
inherit this process's environment, which gets glibc's huge-page malloc first
as the ``kpjax`` command does (kpjax.runtime). Figures are medians over rounds;
each ratio is the median of the rounds' own ratios, > 1 where kpjax is better.
A peer whose framework does not import is reported as not installed, and the
others still run. The CPU and the load average before and after the whole
comparison are recorded, with a warning on stderr when other jobs shared the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from kpjax.runtime import ensure_hugepage_malloc

if __name__ == "__main__":
    ensure_hugepage_malloc(sys.argv)  # before JAX is imported: see kpjax/runtime.py

from kpjax.bench import (BenchProcessFailed, busy_warning, format_conditions, format_table,  # noqa: E402
                         latency_calls, measured_under_load, run_json, run_kpjax)
from kpjax.errors import KpjaxError  # noqa: E402

PEERS = ("keras", "torch")  # peers/NAME_seed.py: the seed CNN in Keras/TensorFlow and PyTorch
PEERS_DIR = Path(__file__).resolve().parent / "peers"
RATIOS = {  # ratio name -> (figure, whether higher is better); every ratio is > 1 where kpjax is better
    "ratio_train": ("train_images_per_s", True),
    "ratio_infer_b256": ("infer_b256_images_per_s", True),
    "ratio_infer_b1_p50": ("infer_b1_p50_ms", False),
}


def _medians(rows: list[dict]) -> dict:
    """Each measured (float) figure's median over rounds; counts, names and the loads from the first round."""
    return {k: statistics.median(r[k] for r in rows) if isinstance(v, float) else v for k, v in rows[0].items()}


def run_peers(rounds: int = 3, batch_size: int = 64, steps: int = 10, repeats: int = 5,
              peers_dir: Path = PEERS_DIR) -> dict:
    """kpjax and each peer in ``peers_dir``, alternated for ``rounds`` rounds: medians and ratios."""
    if not peers_dir.is_dir():
        raise KpjaxError(f"--peers-dir {peers_dir}: no such folder")
    peer_args = [f"--batch={batch_size}", f"--steps={steps}", f"--repeats={repeats}",
                 f"--calls={latency_calls(repeats)}"]
    runs = {name: [] for name in ("kpjax", *PEERS)}
    failures = {}
    for _ in range(rounds):
        try:
            runs["kpjax"].append(run_kpjax("all", batch_size=batch_size, steps=steps, repeats=repeats))
        except BenchProcessFailed as failed:
            raise KpjaxError(f"kpjax: {failed}") from None
        for name in PEERS:
            if name in failures:
                continue
            script = peers_dir / f"{name}_seed.py"
            if not script.is_file():
                failures[name] = {"status": "not found", "error": f"no {script}"}
                continue
            try:
                runs[name].append(run_json([sys.executable, str(script), *peer_args]))
            except BenchProcessFailed as failed:
                missing = str(failed).startswith(("ModuleNotFoundError", "ImportError"))
                failures[name] = {"status": "not installed" if missing else "failed", "error": str(failed)}
    peers = {}
    for name in PEERS:
        if name in failures:
            peers[name] = failures[name]
            continue
        peers[name] = _medians(runs[name])
        for ratio, (figure, higher_is_better) in RATIOS.items():
            per_round = [k[figure] / p[figure] if higher_is_better else p[figure] / k[figure]
                         for k, p in zip(runs["kpjax"], runs[name])]
            peers[name][ratio] = statistics.median(per_round)
    return {"kpjax": _medians(runs["kpjax"]), "peers": peers, "rounds": rounds,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def format_peers(result: dict) -> str:
    """run_peers' medians as a table, one line per peer (its ratios, or why it did not run), then the machine."""
    measured = {name: peer for name, peer in result["peers"].items() if "status" not in peer}
    lines = [format_table({"kpjax": result["kpjax"], **measured})]
    for name, peer in result["peers"].items():
        if "status" in peer:
            lines.append(f"{name}: {peer['status']} ({peer['error']})")
        else:
            lines.append(f"kpjax vs {name}: training {peer['ratio_train']:.2f}x, batch-256 inference "
                         f"{peer['ratio_infer_b256']:.2f}x, batch-1 p50 latency {peer['ratio_infer_b1_p50']:.2f}x")
    lines.append(f"medians of {result['rounds']} alternated rounds; ratios > 1: kpjax better")
    lines.append(format_conditions(result))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds; figures are their medians")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="train steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peers-dir", type=Path, default=PEERS_DIR, help="folder of NAME_seed.py peer scripts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    try:
        for name in ("rounds", "batch", "steps", "repeats"):
            if getattr(args, name) < 1:
                raise KpjaxError(f"--{name} {getattr(args, name)}: expected at least 1")
        result = measured_under_load(lambda: run_peers(args.rounds, args.batch, args.steps, args.repeats,
                                                       args.peers_dir))
    except KpjaxError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result) if args.json else format_peers(result))
    warning = busy_warning([result])
    if warning:
        print(warning, file=sys.stderr)


if __name__ == "__main__":
    main()
