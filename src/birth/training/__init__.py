"""One run: its config and checks (``config``, ``validation``, ``naming``), what it is built from
(``build``), the training loop (``loop``), evaluation (``evaluation``), interventions
(``interventions``, ``intervention_kinds``), the run directory and its writer's lock (``runs``,
``lock``), exit codes, threads, and TensorBoard and W&B output."""
