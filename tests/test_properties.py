"""Property-based tests: the sampler's invariants on arbitrary small task settings, and the
config parser's promise that any user input ends in a ConfigError, never another exception."""
from functools import lru_cache

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from birth.training.config import ConfigError, DataArgs, all_keys, build_config
from birth.tasks.triggers.corpus import bundled_stats
from birth.tasks.triggers.task import TriggersTask
from birth.training.validation import resolve_config

N = 65  # tokens of the bundled tiny Shakespeare table


@lru_cache(maxsize=None)
def _stats():
    return bundled_stats()


@st.composite
def task_settings(draw):
    fixed = draw(st.booleans())
    offset = draw(st.integers(0, 5)) if fixed else 0
    k = draw(st.integers(0, 8))
    seq_length = draw(st.integers(1, 24))
    show_latents = draw(st.booleans()) and k < seq_length
    data = DataArgs(k=k, seq_length=seq_length, show_latents=show_latents, fixed_special_toks=fixed,
                    special_toks_offset=offset, output_counter=draw(st.booleans()), no_repeat=draw(st.booleans()))
    return data, draw(st.booleans())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_=task_settings(), seed=st.integers(0, 2 ** 32), index=st.integers(0, 1000),
       batch_size=st.integers(1, 4))
def test_sampler_invariants(settings_, seed, index, batch_size):
    data, bigram_outs = settings_
    task = TriggersTask(data, stats=_stats(), bigram_outs=bigram_outs)
    b = task.batch(seed, "train", index, batch_size)
    k, t = data.k, data.seq_length
    # shapes and dtypes
    for name in ("x", "y", "outs"):
        assert getattr(b, name).shape == (batch_size, t) and getattr(b, name).dtype == torch.long
    for name in ("triggers", "outputs"):
        assert getattr(b, name).shape == (batch_size, k) and getattr(b, name).dtype == torch.long
    for tokens in (b.x, b.y, b.triggers, b.outputs):
        assert ((tokens >= 0) & (tokens < N)).all()
    assert torch.equal(b.x[:, 1:], b.y[:, :-1])  # y is x shifted by one
    n_latent = k if data.show_latents else 0
    assert (b.outs[:, :n_latent] == -1).all() and (b.outs[:, n_latent:] >= 0).all()
    for row in range(batch_size):
        _check_sequence(task, data, bigram_outs, b.x[row], b.y[row], b.outs[row], b.triggers[row], b.outputs[row])
    # a pure function of (seed, stream, index)
    again = task.batch(seed, "train", index, batch_size)
    assert all(torch.equal(getattr(b, f), getattr(again, f)) for f in ("x", "y", "outs", "triggers", "outputs"))


def _check_sequence(task, data, bigram_outs, x, y, outs, triggers, outputs) -> None:
    trig, outp = triggers.tolist(), outputs.tolist()
    assert len(set(trig)) == len(trig)  # K distinct triggers
    if data.fixed_special_toks:
        assert trig == task.fixed
    if data.no_repeat:
        assert all(q != o for q, o in zip(trig, outp))
    if bigram_outs:  # o ~ pi_b(.|q): a pair that occurs in the corpus
        cond = _stats().cond
        assert all(cond[q, o] > 0 or (data.no_repeat and np.isclose(cond[q].sum() - cond[q, q], 0))
                   for q, o in zip(trig, outp))
    output_of = dict(zip(trig, outp))
    n_latent = data.k if data.show_latents else 0
    if n_latent:
        assert x[:n_latent].tolist() == trig
    seen: dict[int, int] = {}
    for pos in range(n_latent, len(x)):
        tok = int(x[pos])
        if tok in output_of:
            seen[tok] = seen.get(tok, 0) + 1
            assert int(y[pos]) == output_of[tok]  # every trigger occurrence is followed by its output
            assert int(outs[pos]) == (seen[tok] if data.output_counter else 1)  # and counted
        else:
            assert int(outs[pos]) == 0


def test_fixed_triggers_with_k_0_give_empty_long_tensors():
    data = DataArgs(k=0, seq_length=8, fixed_special_toks=True)
    b = TriggersTask(data, stats=_stats()).batch(0, "train", 0, 2)
    assert b.triggers.shape == (2, 0) and b.triggers.dtype == torch.long
    assert (b.outs == 0).all()


# -- the config parser ---------------------------------------------------------------------------
KEYS = sorted(all_keys()) + ["data.k", "model.dim", "optim.lr", "steps", "+seed", "nope", "data_args.kk", ""]
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(-10 ** 20, 10 ** 20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "False", "null", "~", ".nan", "-.inf", "1e-4", "1e400", "0x1f", "1:30", "[1, 2]",
                     "{a: 1}", "!!int x", "!!float x", "!!timestamp 2020", "!!python/object:os.system x", "&a",
                     "*a", "'quoted'", "\"x", "3:W_K1,5:W_K2", "-1:W_K1", "²", "1_000", " 5 ", "\x00"]),
)


ITEMS = st.one_of(st.text(max_size=30),
                  st.builds("{}={}".format, st.one_of(st.sampled_from(KEYS), st.text(max_size=12)),
                            st.text(max_size=12)))


@settings(max_examples=100, deadline=None)
@given(items=st.lists(ITEMS, max_size=4), preset=st.sampled_from([None, "quick"]))
def test_arbitrary_override_strings_raise_only_config_error(items, preset):
    try:
        build_config(preset, items)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)  # one line


@settings(max_examples=100, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4),
       preset=st.sampled_from([None, "quick", "full"]))
def test_any_value_for_any_key_is_validated_or_refused_with_config_error(pairs, preset):
    """Parsing and the whole-config validation: every outcome is a config or one ConfigError line."""
    items = [f"{key}={value}" for key, value in pairs]
    assume(not any(key == "data_args.corpus" for key, _ in pairs))  # arbitrary paths could name real files
    try:
        resolve_config(preset, items)
    except ConfigError as err:
        assert str(err) and "\n" not in str(err)
