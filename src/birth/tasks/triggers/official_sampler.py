"""The official per-token sampler (one ``rng.choice`` per token, numpy), kept as the speed baseline
of ``birth bench`` and as an independent oracle for the tests of the vectorised ``birth.tasks.triggers.task``."""
from __future__ import annotations

import numpy as np

from birth.tasks.triggers.corpus import CorpusStats
from birth.tasks.triggers.task import DataArgs, fixed_triggers


def naive_sequence(rng: np.random.Generator, data: DataArgs, stats: CorpusStats, bigram_outs: bool = False,
                   split: str | None = None) -> tuple[list[int], list[int]]:
    """One sequence of T+1 tokens and its occurrence counts, token by token as the official code."""
    n = stats.num_tokens
    toks = list(range(n))
    if data.fixed_special_toks:
        idxs = fixed_triggers(stats.marginal, data.k, data.special_toks_offset)
    else:
        idxs = [int(i) for i in rng.choice(toks, p=stats.marginal, size=data.k, replace=False)]
    pools = [[t for t in toks if not (data.no_repeat and t == q)] for q in idxs]
    n_train = int(0.75 * n)
    if split == "train":
        pools = [p[:n_train] for p in pools]
    elif split == "test":
        pools = [p[n_train:] for p in pools]
    if bigram_outs:
        outs = [int(rng.choice(p, p=stats.cond[q][p] / stats.cond[q][p].sum())) for p, q in zip(pools, idxs)]
    else:
        outs = [int(rng.choice(p)) for p in pools]
    seq = list(idxs) if data.show_latents else []
    counts_seq = [-1] * len(idxs) if data.show_latents else []
    seq.append(int(rng.choice(toks, p=stats.marginal)))
    counts: dict[int, int] = {}
    while len(seq) < data.seq_length + 1:
        last = seq[-1]
        if last in idxs:
            seq.append(outs[idxs.index(last)])
            counts[last] = counts.get(last, 0) + 1
            counts_seq.append(counts[last] if data.output_counter else 1)
        else:
            counts_seq.append(0)
            seq.append(int(rng.choice(toks, p=stats.cond[last])))
    counts_seq.append(0)
    return seq, counts_seq


def naive_batch(rng: np.random.Generator, data: DataArgs, stats: CorpusStats, batch_size: int,
                **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, outs) arrays of shape (B, T), as the official ``iterate_batches`` yields them."""
    seqs, outs = zip(*(naive_sequence(rng, data, stats, **kw) for _ in range(batch_size)))
    seq = np.asarray(seqs)
    out = np.asarray(outs)
    return seq[:, :-1], seq[:, 1:], out[:, :-1]
