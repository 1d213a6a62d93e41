"""A recipe of one's own: the lookup task at two numbers of keys, a figure and a rule."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from birth.experiments.recipe import Recipe  # noqa: E402
from birth.experiments.rules import FinalAtLeast  # noqa: E402

SIZE = {"data_args.task": "mylab.tasks:LookupTask", "data_args.seq_length": 16, "model_args.max_length": 16,
        "model_args.arch": "full", "model_args.n_heads": 1, "model_args.dim": 16, "model_args.no_ffn": True,
        "loss_head_only": False, "optim_args.use_sgd": False, "optim_args.learning_rate": 0.01,
        "optim_args.batch_size": 16, "max_iters": 20, "eval_delta": 10, "eval_batch_size": 32, "device": "cpu"}


def conditions(scale):
    return {f"{k} keys": {**SIZE, "data_args.keys": k} for k in (4, 6)}


def plot(res, out):
    fig, ax = plt.subplots()
    for group in res.groups():
        iters, values = res.curve(group, "eval_loss")
        ax.plot(iters, values.mean(0), label=group)
    ax.legend()
    out.figures.mkdir(parents=True, exist_ok=True)
    path = out.figures / "lookup.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


lookup = Recipe("lookup", "none", "The in-context lookup table", conditions, plot,
                rules=[FinalAtLeast("L1", "the global accuracy is above chance", "lookup", group="4 keys",
                                    bounds=(("eval_acc_global", 0.05),))])
