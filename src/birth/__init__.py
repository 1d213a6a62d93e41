"""birth: the bigram-with-triggers task of "Birth of a Transformer: A Memory Viewpoint", its models,
probes and experiments."""

__version__ = "0.1.0"


def load_run(path, device: str = "cpu"):
    """A saved run directory as a ``birth.analysis.run.Run``: config, models at saved steps, samplers,
    metrics; or a folder of ``birth export hf`` (``birth.analysis.hf_checkpoints.ExportedRun``)."""
    from birth.analysis.hf_checkpoints import ExportedRun, is_export  # deferred: `import birth` stays light
    from birth.analysis.run import load_run as _load_run  # deferred: `import birth` stays light
    return ExportedRun(path, device) if is_export(path) else _load_run(path, device)


def from_pretrained(path, step=None, device: str = "cpu"):
    """The model of a ``birth export hf`` folder at ``step`` (default: its last), or of one step's folder."""
    from birth.analysis.hf_checkpoints import from_pretrained as _from  # deferred: `import birth` stays light
    return _from(path, step, device)


def train(config, out, *, preset=None, callbacks=(), hooks=None, resume: bool = False, overwrite: bool = False,
          quiet: bool = True):
    """Trains one run into ``out`` and returns it as a ``birth.analysis.run.Run``. ``config``: a TrainConfig,
    or {key: value} overrides (on ``preset``); ``callbacks``: functions ``fn(ev) -> dict | None``
    called at every evaluation (``birth.training.evaluation.Evaluation``: ``ev.step``, ``ev.model``,
    ``ev.batch``, ``ev.metrics``, ``ev.outputs(name)``), whose dicts join the metrics line;
    ``hooks``: {hook point: ``fn(tensor, hook)``} acting in every pass (``birth.model.hooks``)."""
    from birth.training.start import train_into  # deferred: `import birth` stays light
    from birth.analysis.run import load_run as _load_run  # deferred: `import birth` stays light
    train_into(config, out, preset=preset, callbacks=callbacks, hooks=hooks, resume=resume, overwrite=overwrite,
               quiet=quiet)
    return _load_run(out)


def load_sweep(path):
    """Every run under ``path`` (a sweep, a reproduction, a run) as one long pandas DataFrame: one row
    per (run, evaluation), a column per swept key, ``seed``, ``run``, ``label`` and every metric."""
    from birth.analysis.table import load_sweep as _load_sweep  # deferred: pandas
    return _load_sweep(path)


def events(df, metric: str, threshold: float, below: bool = False):
    """Per run of a ``load_sweep`` table, the first iteration at which ``metric`` reaches ``threshold``
    (``below=True``: falls to it), NaN if never; one row per run with its swept columns."""
    from birth.analysis.table import events as _events  # deferred: pandas
    return _events(df, metric, threshold, below)


def patch(model, clean, corrupted, metric, points=None, positions=None):
    """Activation patching (``birth.measures.patching.patch``): the change of ``metric`` (logits ->
    one score per sequence) per (hook point, position, head) when one activation of the
    ``corrupted`` tokens' run replaces the ``clean`` tokens', as a pandas DataFrame."""
    from birth.measures.patching import patch as _patch  # deferred: `import birth` stays light
    return _patch(model, clean, corrupted, metric, points, positions)
