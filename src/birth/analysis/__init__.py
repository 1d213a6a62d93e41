"""Analysis: reads finished runs and writes nothing into them but figures and reports. A run in
Python (``run``: ``birth.load_run``), many runs as one table (``table``: ``birth.load_sweep``), the
figures of a run and of a sweep (``plots``, ``sweep_plots``), the HTML report (``report``), the
TransformerLens export (``transformer_lens``) and the LLC over a run's checkpoints (``llc_curve``)."""
