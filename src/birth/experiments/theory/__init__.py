"""The theory of the paper, runnable: associative memories (``memory``), the gradient lemmas
(``lemmas``), Theorem 3's three top-down gradient steps (``three_steps``) and the computations that
measure them (``computations``; ``birth theory NAME``)."""

NAMES = ("capacity", "lemma", "noisy", "three-steps")  # the computations, in the order of the paper
