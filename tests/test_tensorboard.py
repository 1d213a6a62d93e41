"""tensorboard=True: the event files, read back with TensorBoard's own reader, hold the values of
metrics.jsonl at the same steps, and one attention image per layer and evaluation."""
import json
import math

import pytest

pytest.importorskip("tensorboard", reason="the TensorBoard extra is not installed: pip install -e '.[all]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from birth.training.runs import RunDir  # noqa: E402
from birth.training.tensorboard import read_scalars  # noqa: E402

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm


def test_event_files_hold_the_metrics_and_attention_images(cli, tmp_path):
    out = tmp_path / "run"
    proc = cli.run("train", *cli.tiny, "max_iters=120", "tensorboard=True", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = RunDir(out).read_metrics()
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"]  # it trained
    scalars = read_scalars(out / "tensorboard")
    for key in ("loss", "eval_acc_end", "eval_loss_head", "wo1_acc", "score2_acc"):
        expected = [(r["iter"], r[key]) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        assert [s for s, _ in scalars[key]] == [s for s, _ in expected], key
        assert all(math.isclose(v, e, rel_tol=1e-6, abs_tol=1e-7)
                   for (_, v), (_, e) in zip(scalars[key], expected)), key
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"attention/layer1", "attention/layer2"}
    images = acc.Images("attention/layer2")
    assert [i.step for i in images] == [r["iter"] for r in rows]
    assert images[-1].width == images[-1].height == 32 and images[-1].encoded_image_string.startswith(b"\x89PNG")


def test_resume_keeps_one_value_per_step(cli, tmp_path):
    out = tmp_path / "run"
    first = cli.run("train", *cli.tiny, "max_iters=120", "tensorboard=True", "--out", str(out), "--quiet")
    assert first.returncode == 0, first.stderr
    # drop the last checkpoints, then resume: the events written after the checkpoint are purged
    for _, path in RunDir(out).checkpoints()[1:]:
        path.unlink()
    summary = json.loads((out / "summary.json").read_text())
    summary["status"] = "interrupted"
    (out / "summary.json").write_text(json.dumps(summary))
    again = cli.run("train", "--resume", str(out), "--quiet")
    assert again.returncode == 0, again.stderr
    steps = [s for s, _ in read_scalars(out / "tensorboard")["eval_acc_end"]]
    assert steps == sorted(set(steps)) == [r["iter"] for r in RunDir(out).read_metrics()]
