"""Many runs: jobs (``jobs``), one planner and launcher (``plan``), local workers and stacks
(``local``, ``stacked``), Slurm (``slurm``, ``slurm_profile``), sweeps (``sweep``), the launch
options (``options``) and stopping (``stopping``)."""
