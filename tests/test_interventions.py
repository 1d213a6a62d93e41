"""Interventions during training (``interventions=...``): the config form and its errors; ablations;
ideal memories and grafts on trained and frozen matrices, at one step or held for a window; exact
resume of an intervened run; a stack of intervened runs as the same runs alone."""
import shutil

import pytest
import torch

from birth.tasks.triggers.ideal import DEFAULT_GAIN
from birth.training import interventions as I
from birth.training.build import build_setup
from birth.training.config import ConfigError, build_config
from birth.training.interventions import Interventions
from birth.training.runs import RunDir
from birth.launching.stacked import train_stacked
from birth.training.loop import train
from birth.training.validation import resolve_config

SMALL = {"max_iters": 40, "eval_delta": 10, "data_args.seq_length": 32, "model_args.max_length": 32,
         "model_args.dim": 32, "optim_args.batch_size": 16, "eval_batch_size": 32, "device": "cpu",
         "optim_args.learning_rate": 0.2}


def _cfg(**kw):
    return build_config("paper-readme", {**SMALL, **kw})


def test_entries_parse_with_their_defaults():
    a, b, c, d = I.parse("clamp:0:previous@0-100; ablate:1.0:mean@50 ;set:W_O2:ideal:5;set:W_K1:/tmp/run:200@10-20")
    assert (a.kind, a.args, a.start, a.end) == ("clamp", ("0", "previous"), 0, 100)
    assert (b.kind, b.args, b.start, b.end) == ("ablate", ("1.0", "mean"), 50, None)
    assert (c.target, c.args, c.start, c.end) == ("W_O2", ("W_O2", "ideal", "5"), 0, 1)   # set: once, at step 0
    assert (d.args, d.start, d.end) == (("W_K1", "/tmp/run", "200"), 10, 20)
    assert I.parse(a.text())[0] == a
    shape = I.ModelShape("full", 2, 2)
    assert I.hook_of(a, shape)[0] == "blocks.0.attn.hook_pattern"        # every head of layer 0
    assert I.hook_of(b, shape)[0] == "blocks.1.attn.hook_z"              # head 0 of layer 1
    ideal = I.kind_of("set").parse(list(c.args))
    assert (ideal.matrix, ideal.source, ideal.value) == ("W_O2", "ideal", 5.0)
    graft = I.kind_of("set").parse(list(d.args))
    assert (graft.matrix, graft.source, graft.value) == ("W_K1", "/tmp/run", 200.0)


@pytest.mark.parametrize("spec, words", [
    ("clamp:0:diagonal", "unknown pattern 'diagonal'"),
    ("clamp:0:previous:1.5", "strength must be a number in [0, 1]"),
    ("ablate:0:half", "ablate takes zero or mean"),
    ("clamp:x:self", "'x' is not LAYER or LAYER.HEAD"),
    ("clamp:0:self@20-10", "end must come after its start"),
    ("freeze:W_O2", "expected clamp:"),
    ("clamp:2:self", "the model has 2 layers"),
    ("clamp:0.1:self", "layer 0 has 1 head(s)"),
    ("set:W_Q9:ideal", "names no parameter"),
    ("set:W_V2:ideal", "ideal memories exist for W_K1, W_K2, W_O2"),
    ("set:W_K1:/nonexistent/run", "holds no checkpoint"),
])
def test_a_bad_entry_is_one_line_naming_it_before_any_work(spec, words):
    with pytest.raises(ConfigError) as err:
        resolve_config("paper-readme", {**SMALL, "interventions": spec})
    assert str(err.value).startswith("interventions: ") and words in str(err.value) and "\n" not in str(err.value)


def test_an_ablation_replaces_the_heads_output():
    setup = build_setup(resolve_config("full", {**SMALL, "model_args.n_heads": 2, "data_args.k": 3,
                                               "interventions": "ablate:0.1:mean;ablate:1:zero"}))
    seen = {}
    setup.model.hook_point("blocks.0.attn.hook_z").add_hook(lambda t, h: seen.setdefault("z0", t.detach()))
    setup.model.hook_point("blocks.1.hook_attn_out").add_hook(lambda t, h: seen.setdefault("out1", t.detach()))
    Interventions(setup.cfg.interventions, setup.model)
    setup.model(setup.train_batch(0).x)
    # the recording hooks ran first (registered first): the pass went on with the ablated tensors
    x = setup.train_batch(0).x  # the same batch: the recording hooks below run after the ablations
    after = {}
    setup.model.hook_point("blocks.0.attn.hook_z").add_hook(lambda t, h: after.setdefault("z0", t.detach()))
    setup.model(x)
    z = after["z0"]
    assert torch.allclose(z[:, :, 1], seen["z0"][:, :, 1].mean(0, keepdim=True).expand_as(z[:, :, 1]), atol=1e-6)
    assert torch.equal(z[:, :, 0], seen["z0"][:, :, 0])  # head 0 untouched


def test_ideal_memories_are_recalled_perfectly_by_the_probes():
    from birth.tasks.triggers.probes import memory_probes
    cfg = resolve_config("paper-readme", {**SMALL, "model_args.dim": 128, "data_args.k": 5,
                                          "interventions": "set:W_K1:ideal;set:W_K2:ideal;set:W_O2:ideal"})
    setup = build_setup(cfg)
    before = memory_probes(setup.model, triggers=setup.triggers, n_train_toks=65)
    Interventions(cfg.interventions, setup.model, setup.triggers, 32).before_step(0)
    after = memory_probes(setup.model, triggers=setup.triggers, n_train_toks=65)
    assert before["wo1_acc"] < 0.2 and after["wo1_acc"] == 1.0 and after["wk1_acc"] == 1.0
    assert after["wk0_acc"] >= 0.95  # previous-token memory of 31 random positions in d = 128
    # the documented scale: a stored association scores the gain in the logits
    emb = setup.model.tok_embeddings.weight
    l2 = setup.model.layers[1].attention
    score = (setup.model.output.weight @ l2.wo.weight @ l2.wv.weight @ emb.t()).diagonal()
    assert float(score.detach().mean()) == pytest.approx(DEFAULT_GAIN, rel=0.05)


def test_a_set_holds_its_matrix_for_its_window_then_training_goes_on(tmp_path):
    source = tmp_path / "source"
    train(_cfg(max_iters=10, seed=7, init_seed=7), source, quiet=True)
    donor = RunDir.load_checkpoint(RunDir(source).latest_checkpoint())["model"]
    cfg = _cfg(interventions=f"set:W_K1:{source}@0-20;set:W_V2:{source}@0", checkpoint_steps="20")
    train(cfg, tmp_path / "run", quiet=True)
    at20 = RunDir.load_checkpoint(RunDir(tmp_path / "run").ckpt_dir / "step_00000020.pt")["model"]
    end = RunDir.load_checkpoint(RunDir(tmp_path / "run").latest_checkpoint())["model"]
    k1 = "layers.0.attention.wk.weight"
    assert torch.equal(at20[k1], donor[k1])          # held: set at every step of 0..19, never trained
    assert not torch.equal(end[k1], donor[k1])       # trained after the window
    v2 = "layers.1.attention.wv.weight"              # a frozen matrix, set once at step 0
    assert torch.equal(end[v2], donor[v2])


@pytest.mark.slow
def test_an_intervened_run_resumes_exactly(tmp_path):
    from conftest import same_metrics
    cfg = _cfg(interventions="clamp:0:previous:0.5@0-25;set:W_O2:ideal@5;ablate:1:mean@30", checkpoint_steps="20")
    train(cfg, tmp_path / "whole", quiet=True)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    resumed = RunDir(tmp_path / "resumed")
    for step, path in resumed.checkpoints():
        if step > 20:
            path.unlink()
    train(cfg, resumed.path, resume=True, quiet=True)
    assert same_metrics(tmp_path / "whole" / "metrics.jsonl", resumed.metrics_path)
    a, b = (RunDir.load_checkpoint(RunDir(p).latest_checkpoint())["model"] for p in (tmp_path / "whole", resumed.path))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_stack_of_intervened_runs_learns_what_they_learn_alone(tmp_path):
    # gain 2: at the default 10 and lr 0.2 this tiny model's loss blows up to 8 nats after the set,
    # and the chaos amplifies the stack's float rounding beyond any tolerance (not so at gain 2)
    spec = "clamp:0:previous:0.8@0-20;set:W_O2:ideal:2@10"
    cfgs = [_cfg(seed=42 + i, init_seed=i, interventions=spec) for i in range(2)]
    train_stacked(cfgs, [tmp_path / f"s{i}" for i in range(2)], [False, False])
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"a{i}", quiet=True)
        ours, alone = RunDir(tmp_path / f"s{i}").read_metrics(), RunDir(tmp_path / f"a{i}").read_metrics()
        for a, b in zip(ours, alone):
            assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-3, abs=1e-4), a["iter"]
    assert RunDir(tmp_path / "s0").read_summary()["interventions"] == [iv.text() for iv in I.parse(spec)]
