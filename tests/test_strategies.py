"""The paper task's Bayes strategy (birth.tasks.triggers.task) against the exact posterior predictive,
computed by enumerating the whole generative process of a toy corpus."""
import itertools

import numpy as np
import pytest
import torch

from birth.tasks.triggers.corpus import CorpusStats
from birth.tasks.triggers.task import (
    DataArgs,
    TriggerBatch,
    TriggersTask,
    trigger_masks,
)

# A 3-token corpus: token 0 is the most frequent, hence the one fixed trigger (K = 1).
TOY = CorpusStats(vocab=("a", "b", "c"), unigram_counts=np.array([5.0, 3.0, 2.0]),
                  bigram_counts=np.array([[1.0, 3.0, 1.0], [2.0, 1.0, 4.0], [3.0, 1.0, 1.0]]), source="toy")


def enumerate_process(task: TriggersTask, length: int) -> dict[tuple[int, ...], float]:
    """p(z) for every sequence z of ``length`` tokens, summing over the trigger's output o
    (uniform over the N tokens): z_1 ~ pi_u, z_{t+1} = o after the trigger, else ~ pi_b(.|z_t)."""
    n, (q,) = task.num_tokens, task.fixed
    marginal, cond = TOY.marginal, TOY.cond
    law: dict[tuple[int, ...], float] = {}
    for o in range(n):
        for z in itertools.product(range(n), repeat=length):
            p = marginal[z[0]] / n
            for a, b in itertools.pairwise(z):
                p *= (1.0 if b == o else 0.0) if a == q else cond[a, b]
            if p > 0:
                law[z] = law.get(z, 0.0) + p
    return law


def occurrence_codes(x: torch.Tensor, q: int) -> torch.Tensor:
    """outs by a loop: n at the n-th occurrence of the trigger q in x, 0 elsewhere."""
    outs = torch.zeros_like(x)
    for i in range(x.shape[0]):
        seen = 0
        for t in range(x.shape[1]):
            if int(x[i, t]) == q:
                seen += 1
                outs[i, t] = seen
    return outs


@pytest.mark.parametrize("seq_length", [4, 5])
def test_triggers_bayes_is_the_exact_posterior_predictive(seq_length):
    task = TriggersTask(DataArgs(k=1, fixed_special_toks=True, seq_length=seq_length), stats=TOY)
    assert task.fixed == [0]
    law = enumerate_process(task, seq_length + 1)
    assert abs(sum(law.values()) - 1) < 1e-12
    seqs = torch.tensor(sorted(law))                                                  # every possible sequence
    x, y = seqs[:, :-1], seqs[:, 1:]
    outs = occurrence_codes(x, 0)
    batch = TriggerBatch(x, y, trigger_masks(outs), {"outs": outs, "triggers": torch.zeros(len(x), 1, dtype=torch.long),
                                                     "outputs": torch.zeros(len(x), 1, dtype=torch.long)})
    bayes = task.strategies()["bayes"](batch).numpy()
    # the posterior predictive p(z_{t+2} = v | z_1..z_{t+1}) of every prefix, from the enumerated law
    prefix_mass: dict[tuple[int, ...], np.ndarray] = {}
    for z, p in law.items():
        for t in range(seq_length):
            prefix_mass.setdefault(z[: t + 1], np.zeros(3))[z[t + 1]] += p
    checked = {m: 0 for m in ("in_context", "global", "first")}
    for i, z in enumerate(seqs.tolist()):
        for t in range(seq_length):
            exact = prefix_mass[tuple(z[: t + 1])]
            np.testing.assert_allclose(bayes[i, t], exact / exact.sum(), atol=1e-12, err_msg=f"{z} at {t}")
            for m in checked:
                checked[m] += bool(batch.masks[m][i, t])
    assert all(count > 0 for count in checked.values()), checked                    # every mask was compared
