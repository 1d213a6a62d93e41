"""Bad input through the real command line: exit code 2, one stderr line that names the key (and
what is allowed), no traceback, and nothing created or changed on disk."""
import hashlib
import json
import pathlib
import shutil

import pytest
import torch

from birth.cli import main

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

OUT = ["--preset", "quick", "--out", "out", "--quiet"]  # 'out' is relative to the test's own directory

# (id, arguments after `birth train`, substrings the error line must contain). {tmp} is the test's
# directory, holding: empty.txt, latin1.txt, one_char.txt, a_file, existing/ (a complete run),
# no_run/ (a directory without a run), bad_config/ and bad_checkpoint/ (interrupted runs, damaged).
CASES = [
    ("unknown-key-suggests", OUT + ["data_args.kk=3"], ["data_args.kk", "unknown key", "did you mean data_args.k?"]),
    ("unknown-top-key-suggests", OUT + ["max_iter=10"], ["max_iter", "did you mean max_iters?"]),
    ("unknown-key-no-match", OUT + ["zzz_qqq=1"], ["zzz_qqq: unknown key", "birth train --help"]),
    ("int-not-a-number", OUT + ["data_args.k=three"], ["data_args.k", "expected an integer", "'three'"]),
    ("int-given-a-fraction", OUT + ["data_args.k=2.5"], ["data_args.k", "expected an integer", "2.5"]),
    ("int-given-a-list", OUT + ["data_args.k=[1,2]"], ["data_args.k", "expected an integer"]),
    ("int-overflows", OUT + ["max_iters=1e400"], ["max_iters", "expected an integer"]),
    ("bool-not-a-bool", OUT + ["loss_head_only=maybe"], ["loss_head_only", "expected true or false"]),
    ("float-not-a-number", OUT + ["optim_args.learning_rate=fast"], ["optim_args.learning_rate", "expected a"]),
    ("float-infinite", OUT + ["optim_args.learning_rate=.inf"], ["optim_args.learning_rate", "finite number"]),
    ("k-negative", OUT + ["data_args.k=-1"], ["data_args.k", "must be >= 0", "-1"]),
    ("random-triggers-more-than-tokens", OUT + ["data_args.fixed_special_toks=false", "data_args.k=100"],
     ["data_args.k", "100 random triggers", "65 tokens"]),
    ("fixed-k-plus-offset-too-big", OUT + ["data_args.k=60", "data_args.special_toks_offset=10"],
     ["data_args.k", "special_toks_offset = 70", "65 tokens"]),
    ("offset-negative", OUT + ["data_args.special_toks_offset=-2"], ["data_args.special_toks_offset", ">= 0"]),
    ("seq-length-above-max-length", OUT + ["data_args.seq_length=128"],
     ["data_args.seq_length", "128", "model_args.max_length=64"]),
    ("show-latents-k-too-big", OUT + ["data_args.show_latents=true", "data_args.k=64"],
     ["data_args.k", "k < seq_length"]),
    ("lr-zero", OUT + ["optim_args.learning_rate=0"], ["optim_args.learning_rate", "must be > 0"]),
    ("lr-negative-short-name", OUT + ["optim.lr=-0.1"], ["optim_args.learning_rate", "must be > 0", "-0.1"]),
    ("batch-zero", OUT + ["optim_args.batch_size=0"], ["optim_args.batch_size", "must be > 0"]),
    ("eval-batch-negative", OUT + ["eval_batch_size=-8"], ["eval_batch_size", "must be > 0"]),
    ("dim-zero", OUT + ["model_args.dim=0"], ["model_args.dim", "must be > 0"]),
    ("dim-too-large", OUT + ["model_args.dim=1000000000000000000"], ["model_args.dim", "too large"]),
    ("dim-not-divisible-by-heads", OUT + ["model_args.arch=full", "model_args.n_heads=3"],
     ["model_args.dim", "not divisible", "n_heads=3"]),
    ("heads-on-simplified", OUT + ["model_args.n_heads=4"], ["model_args.n_heads", "arch=full"]),
    ("layers-on-simplified", OUT + ["model_args.n_layers=3"], ["model_args.n_layers", "2 layers"]),
    ("layers-too-many", OUT + ["model_args.arch=full", "model_args.n_layers=100000"],
     ["model_args.n_layers", "<= 256"]),
    ("freeze-names-no-parameter", OUT + ["freeze_until=100:W_Q9"], ["freeze_until", "'W_Q9'", "W_K1"]),
    ("freeze-negative-step", OUT + ["freeze_until=-5:W_K1"], ["freeze_until", "negative step -5"]),
    ("freeze-step-not-a-number", OUT + ["freeze_until=abc:W_K1"], ["freeze_until", "'abc'", "STEP:NAME"]),
    ("freeze-without-step", OUT + ["freeze_until=W_K1"], ["freeze_until", "no step", "STEP:NAME"]),
    ("freeze-empty-name", OUT + ["freeze_until=100:"], ["freeze_until", "empty parameter name"]),
    ("item-without-equals", OUT + ["data_args.k"], ["data_args.k", "KEY=VALUE"]),
    ("item-without-key", OUT + ["=5"], ["'=5'", "unknown key"]),
    ("corpus-missing", OUT + ["data_args.corpus={tmp}/nope.txt"], ["data_args.corpus", "no such file"]),
    ("corpus-empty", OUT + ["data_args.corpus={tmp}/empty.txt"], ["data_args.corpus", "is empty"]),
    ("corpus-not-utf8", OUT + ["data_args.corpus={tmp}/latin1.txt"], ["data_args.corpus", "not UTF-8"]),
    ("corpus-one-distinct-char", OUT + ["data_args.corpus={tmp}/one_char.txt"],
     ["data_args.corpus", "at least 2 distinct characters"]),
    ("corpus-is-a-directory", OUT + ["data_args.corpus={tmp}/no_run"], ["data_args.corpus"]),
    ("output-split-with-bigram-outs", OUT + ["data_args.output_split=true", "bigram_outs_train=true"],
     ["data_args.output_split", "bigram_outs_train"]),
    ("full-only-flag-on-simplified", OUT + ["model_args.no_ffn=true"], ["model_args.no_ffn", "arch=full only"]),
    ("simplified-only-flag-on-full", OUT + ["model_args.arch=full", "model_args.zero_init=true"],
     ["model_args.zero_init", "arch=simplified only"]),
    ("rope-with-sin-cos", OUT + ["model_args.use_rope=true", "model_args.sin_cos=true"],
     ["model_args.use_rope", "sin_cos"]),
    ("loss-head-only-without-triggers", OUT + ["data_args.k=0"], ["data_args.k", "loss_head_only"]),
    ("momentum-one", OUT + ["optim_args.momentum=1"], ["optim_args.momentum", "[0, 1)"]),
    ("beta2-above-one", OUT + ["optim_args.beta2=1.5"], ["optim_args.beta2", "[0, 1)"]),
    ("weight-decay-negative", OUT + ["optim_args.weight_decay=-1e-4"], ["optim_args.weight_decay", ">= 0"]),
    ("device-unknown", OUT + ["device=tpu"], ["device", "auto, cpu, cuda", "'tpu'"]),
    ("device-cuda-absent", OUT + ["device=cuda"], ["device", "no CUDA device", "cpu"]),
    ("arch-unknown", OUT + ["model_args.arch=transformer"], ["model_args.arch", "simplified, full"]),
    ("eval-delta-zero", OUT + ["eval_delta=0"], ["eval_delta", "must be > 0"]),
    ("max-iters-zero", OUT + ["max_iters=0"], ["max_iters", "must be > 0"]),
    ("checkpoint-every-negative", OUT + ["checkpoint_every=-1"], ["checkpoint_every", ">= 0"]),
    ("checkpoint-steps-malformed", OUT + ["checkpoint_steps=10,abc"], ["checkpoint_steps", "'abc'", "100,300"]),
    ("keep-checkpoints-zero", OUT + ["keep_checkpoints=0"], ["keep_checkpoints", "must be > 0"]),
    ("seed-negative", OUT + ["seed=-1"], ["seed", "must be >= 0"]),
    ("init-seed-too-large", OUT + ["init_seed=99999999999999999999"], ["init_seed", "2**63"]),
    ("unknown-preset", ["--preset", "nope", "--out", "out"], ["--preset", "invalid choice", "'quick'"]),
    ("unknown-option", OUT + ["--bogus"], ["unrecognized arguments: --bogus", "--help"]),
    ("out-holds-a-run", ["--preset", "quick", "--out", "{tmp}/existing"],
     ["--out", "already holds a run", "--resume", "--overwrite"]),
    ("overwrite-with-a-bad-config", ["--preset", "quick", "--out", "{tmp}/existing", "--overwrite", "data_args.k=-1"],
     ["data_args.k", ">= 0"]),
    ("out-is-a-file", ["--preset", "quick", "--out", "{tmp}/a_file"], ["--out", "not a directory"]),
    ("out-below-a-file", ["--preset", "quick", "--out", "{tmp}/a_file/run"], ["--out", "not a directory"]),
    ("resume-dir-without-run", ["--resume", "{tmp}/no_run"], ["--resume", "holds no run"]),
    ("resume-missing-dir", ["--resume", "{tmp}/missing"], ["--resume", "holds no run"]),
    ("resume-with-overrides", ["--resume", "{tmp}/existing", "data_args.k=5"], ["--resume", "overrides"]),
    ("resume-with-overwrite", ["--resume", "{tmp}/existing", "--overwrite"], ["--resume", "--overwrite"]),
    ("resume-damaged-config", ["--resume", "{tmp}/bad_config"], ["--resume", "config.yaml"]),
]


def snapshot(root) -> dict:
    """Every path under ``root`` with its size, modification time and content hash."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns,
                                       None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


class _Payload:
    """Unpickling this creates a file: what a malicious checkpoint could do with full pickle loading."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture
def workdir(tmp_path, reference_run, monkeypatch):
    """A directory holding every file the cases refer to; the cases run with it as cwd."""
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 na\u00efve".encode("latin-1"))
    (tmp_path / "one_char.txt").write_text("aaaa")
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "no_run").mkdir()
    (tmp_path / "no_run" / "notes.txt").write_text("something else")
    shutil.copytree(reference_run, tmp_path / "existing")
    for name in ("bad_config", "bad_checkpoint", "evil_checkpoint"):  # runs that were interrupted, then damaged
        run = shutil.copytree(reference_run, tmp_path / name)
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps(dict(summary, status="interrupted")))
    (tmp_path / "bad_config" / "config.yaml").write_text("data_args: [unclosed\n")
    (tmp_path / "bad_checkpoint" / "checkpoints" / "step_00000060.pt").write_bytes(b"not a checkpoint")
    torch.save({"model": _Payload(tmp_path / "pwned")},
               tmp_path / "evil_checkpoint" / "checkpoints" / "step_00000060.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(argv: list[str]) -> int:
    """``birth`` as its console script runs it: argparse exits through SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("args, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(workdir, capsys, args, needles):
    if "device=cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    before = snapshot(workdir)
    code = run_cli(["train", *(a.format(tmp=workdir) for a in args)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("birth: error: "), err
    for needle in needles:
        assert needle.format(tmp=workdir) in lines[0]
    assert snapshot(workdir) == before  # nothing created (no 'out'), nothing changed


def test_at_least_25_distinct_bad_inputs():
    assert len({c[0] for c in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case", ["unknown-key-suggests", "unknown-preset", "corpus-not-utf8", "out-holds-a-run"])
def test_the_installed_command_exits_2_without_traceback(cli, workdir, case):
    """The same contract end to end: a real process, its exit status and its whole stderr."""
    args = dict((c[0], c[1]) for c in CASES)[case]
    before = snapshot(workdir)
    proc = cli.run("train", *(a.format(tmp=workdir) for a in args), cwd=workdir)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("birth: error: ")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("name", ["bad_checkpoint", "evil_checkpoint"])
def test_a_damaged_checkpoint_or_one_with_pickled_code_is_skipped_never_run(workdir, capsys, name):
    """Weights-only loading refuses the pickled call (it would create {tmp}/pwned); either way the
    resume falls back to the checkpoint before, with one warning line."""
    assert run_cli(["train", "--resume", str(workdir / name), "--quiet"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "damaged checkpoint step_00000060.pt" in warnings[0]
    assert warnings[0].endswith("resuming from step_00000056.pt")
    assert not (workdir / "pwned").exists()
