"""Writes tests/data/reference/: short runs of the paper's task made with the code *before* the task
plug-ins (commit ee17ae3), so that tests/test_reference_runs.py can check that today's code gives
the same metrics, floors and run names for the same configs.

    python scripts/make_reference_runs.py --write  # rewrite the reference (only on purpose)
    python scripts/make_reference_runs.py --out DIR  # the same runs made by this code, elsewhere

Each case: its overrides (no preset), its metrics lines (without ``elapsed``), the floors of its
task.json and the run name (config hash) the launcher gave it then.
"""
from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path

import torch

from birth.training.naming import config_hash
from birth.training.loop import train
from birth.training.validation import resolve_config

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference"
TINY = {"max_iters": 40, "eval_delta": 10, "optim_args.batch_size": 16, "eval_batch_size": 16,
        "data_args.seq_length": 32, "model_args.max_length": 32, "model_args.dim": 32, "device": "cpu"}
CASES = {
    # fixed triggers, AdamW, the full loss with a linear final W_F (ff1_loss, the full probed pass)
    "simplified_fixed_ffn": {**TINY, "data_args.k": 3, "data_args.fixed_special_toks": True,
                             "model_args.freeze_embeddings": True, "model_args.freeze_output": True,
                             "model_args.final_ffn": True, "loss_head_only": False,
                             "optim_args.use_sgd": False, "optim_args.learning_rate": 0.01},
    # random triggers, SGD, in-context loss (the rearranged pass), a freeze schedule, the 75/25 split
    "simplified_random_split": {**TINY, "data_args.k": 3, "data_args.output_split": True,
                                "model_args.freeze_embeddings": True, "model_args.freeze_output": True,
                                "freeze_until": "20:W_K1", "optim_args.learning_rate": 0.2},
    # the general transformer: 2 layers, 2 heads, bigram outputs in the OOD batch
    "full_random_bigram_test": {**TINY, "model_args.arch": "full", "model_args.n_heads": 2, "data_args.k": 3,
                                "bigram_outs_test": True, "loss_head_only": False,
                                "optim_args.use_sgd": False, "optim_args.learning_rate": 0.01,
                                "optim_args.weight_decay": 0.01, "optim_args.beta2": 0.99},
}


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {OUT}")
    parser.add_argument("--out", type=Path, help="write the cases here instead")
    args = parser.parse_args()
    if not (args.write or args.out):
        parser.error("say --write (replace the reference) or --out DIR")
    out = args.out or OUT
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for name, overrides in CASES.items():
        cfg = resolve_config(None, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            train(cfg, run, quiet=True)
            lines = [{k: v for k, v in json.loads(line).items() if k != "elapsed"}
                     for line in (run / "metrics.jsonl").read_text().splitlines()]
            floors = json.loads((run / "task.json").read_text())["floors"]
        record = {"overrides": overrides, "run_name": config_hash(cfg), "floors": floors, "metrics": lines,
                  "made_with": {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
                                "machine": platform.machine(), "threads": 1}}
        (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(name, record["run_name"], len(lines), "lines")


if __name__ == "__main__":
    main()
