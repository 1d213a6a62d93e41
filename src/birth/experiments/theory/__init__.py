"""The theory of the paper, runnable: associative memories (``memory``), the gradient lemmas
(``lemmas``), Theorem 3's three top-down gradient steps (``three_steps``), the experiments that
measure them (``experiments``) and the ``birth theory`` subcommand (``cli``). See the README section
"The theory, runnable"."""
