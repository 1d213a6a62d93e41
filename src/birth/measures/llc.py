"""The local learning coefficient (LLC) of a model at its current weights, estimated with
devinterp's SGLD sampler (the `llc` extra: ``pip install 'birth[llc]'``):

    LLC(w*) = nβ · (E_SGLD[L_m(w)] − L(w*))

where the chains start at w*, sample the tempered posterior localized at w* (SGLD with step
``lr``, localization ``gamma``, inverse temperature ``nbeta``), and L is the given loss on the given
batches; only the parameters with requires_grad move. ``birth.analysis.llc_curve`` measures a run
at each of its checkpoints.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass

import torch

INSTALL = "pip install 'birth[llc]'"


class LLCError(ValueError):
    """A setting out of range or a missing extra; one line."""


@dataclass(frozen=True)
class LLCSettings:
    """The sampler's settings. Defaults: devinterp's introduction notebook (``lr=4e-4``,
    ``localization=100``, ``nbeta=default_nbeta(loader)``, 100 draws) with a burn-in. On the quick
    preset ``lr=1e-3`` gives estimates within 10% of these (the chains have mixed), ``gamma=300``
    a third of them (the localization dominates); docs/interop.md."""

    chains: int = 4                    # independent SGLD chains (devinterp's notebooks: 3 to 10)
    draws: int = 100                   # draws per chain, one SGLD step each (devinterp default 100)
    burnin: int = 50                   # SGLD steps before the first draw, not counted
    lr: float = 4e-4                   # SGLD step size epsilon (devinterp introduction notebook)
    gamma: float = 100.0               # localization strength (devinterp introduction notebook)
    nbeta: float | None = None         # inverse temperature; None: m / ln m (devinterp's default_nbeta)
    batch_size: int | None = None      # sequences per SGLD batch, m; None: the run's own batch size
    seed: int = 0                      # seeds the chains' noise (and nothing else)

    def resolved(self, run_batch_size: int) -> LLCSettings:
        """The settings with ``batch_size`` and ``nbeta`` filled in (needs devinterp)."""
        from devinterp.utils import default_nbeta
        m = self.batch_size or run_batch_size
        return LLCSettings(**{**asdict(self), "batch_size": m, "nbeta": self.nbeta or float(default_nbeta(m))})

    def check(self) -> None:
        """Raises LLCError naming the first setting out of range."""
        for name in ("chains", "draws"):
            if getattr(self, name) < 1:
                raise LLCError(f"llc: --{name} must be >= 1, got {getattr(self, name)}")
        if self.burnin < 0:
            raise LLCError(f"llc: --burnin must be >= 0, got {self.burnin}")
        for name in ("lr", "nbeta", "batch_size"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise LLCError(f"llc: --{name.replace('_', '-')} must be > 0, got {value}")
        if not self.gamma >= 0:
            raise LLCError(f"llc: --gamma must be >= 0, got {self.gamma}")


def require_devinterp() -> None:
    """Nothing when devinterp's 1.x sampler imports, else a one-line LLCError naming the extra."""
    try:
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary  # noqa: F401
    except ImportError as err:
        try:
            found = version_of("devinterp")
        except ImportError:
            raise LLCError(f"llc: needs the devinterp library; {INSTALL}") from None
        # devinterp 2.x is a rewrite for Hugging Face language models, without this API
        raise LLCError(f"llc: devinterp {found} lacks the 1.x sampler ({err}); {INSTALL}") from None


def estimate(model: torch.nn.Module, loader, evaluate, settings: LLCSettings, device: torch.device) -> dict:
    """The LLC of ``model`` at its current weights, sampling the parameters with requires_grad, with
    resolved ``settings``, on ``loader``'s batches (burn-in, then draws) and the loss
    ``evaluate(model, batch)``: {llc_mean, llc_std, init_loss, llc_chain_i...}. Leaves the global
    RNG as it found it."""
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary  # the optional extra (llc)
    s = settings
    init_loss = paired_init_loss(model, loader, evaluate, s.burnin)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), warnings.catch_warnings():
        # devinterp warns on every call (seeded runs, deprecations, nbeta passed): advice we follow
        warnings.filterwarnings("ignore", module=r"devinterp\.")
        out = estimate_learning_coeff_with_summary(
            model, loader, evaluate=evaluate, sampling_method=sampler(), init_loss=init_loss,
            optimizer_kwargs={"lr": s.lr, "localization": s.gamma, "nbeta": s.nbeta},
            num_chains=s.chains, num_draws=s.draws, num_burnin_steps=s.burnin, seed=s.seed,
            device=device, verbose=False)
    row = {"llc_mean": out["llc/mean"], "llc_std": out["llc/std"], "init_loss": init_loss}
    row.update({f"llc_chain_{i}": out[f"llc-chain/{i}"] for i in range(s.chains)})
    return row


def sampler():
    """devinterp's SGLD with localization (Lau et al. 2023) as ``SGMCMC.sgld``, not the deprecated
    ``SGLD`` class: it skips the parameters without a gradient, where ``SGLD`` adds noise to the
    frozen ones too (tests/test_llc.py)."""
    from devinterp.optim import SGMCMC
    return SGMCMC.sgld


@torch.no_grad()
def paired_init_loss(model, loader, evaluate, burnin: int) -> float:
    """L(w*): the loss at the checkpoint on the very batches of the draws (every chain sees the same
    batches, in order). devinterp's default (the first ``chains`` batches) leaves the batches'
    own spread of losses in the estimate, several times the spread across chains on the quick preset;
    pairing the batches cancels it."""
    losses = [float(evaluate(model, batch)) for batch in itertools.islice(loader, burnin, None)]
    return sum(losses) / len(losses)


def version_of(package: str) -> str:
    from importlib.metadata import version
    return version(package)
