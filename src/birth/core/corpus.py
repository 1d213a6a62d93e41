"""Character statistics (unigram and bigram counts) of a text corpus.

The bundled table holds the counts of tiny Shakespeare (made by ``scripts/make_corpus_stats.py``);
any UTF-8 text file can replace it, in which case the counts are computed on the fly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

BUNDLED_TABLE = "tinyshakespeare_stats.json"


class CorpusError(ValueError):
    """A corpus file that cannot serve as a character distribution."""


@dataclass(frozen=True)
class CorpusStats:
    """Character vocabulary (sorted) with unigram counts (N,) and bigram counts (N, N).

    ``bigram_counts[i, j]`` counts the consecutive pairs (vocab[i], vocab[j]) of the text.
    """

    vocab: tuple[str, ...]
    unigram_counts: np.ndarray
    bigram_counts: np.ndarray
    source: str

    @property
    def num_tokens(self) -> int:
        return len(self.vocab)

    @cached_property
    def marginal(self) -> np.ndarray:
        """pi_u: unigram probabilities (N,)."""
        return self.unigram_counts / self.unigram_counts.sum()

    @cached_property
    def cond(self) -> np.ndarray:
        """pi_b(.|i): bigram conditionals (N, N), rows summing to one.

        A character never followed by another (only possible as the last character of a text)
        gets the unigram distribution as its row, where the official code would divide by zero.
        """
        rows = self.bigram_counts.sum(axis=1, keepdims=True)
        cond = np.where(rows > 0, self.bigram_counts / np.maximum(rows, 1), self.marginal[None, :])
        return cond

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def encode(self, text: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.vocab)}
        return [index[c] for c in text]

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "vocab": list(self.vocab),
            "unigram_counts": self.unigram_counts.astype(int).tolist(),
            "bigram_counts": self.bigram_counts.astype(int).tolist(),
        }


def stats_from_text(text: str, source: str = "<text>") -> CorpusStats:
    """Counts every character and every pair of consecutive characters of ``text``."""
    vocab = tuple(sorted(set(text)))
    if len(vocab) < 2:
        raise CorpusError(f"{source}: needs at least 2 distinct characters, found {len(vocab)}")
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    n = len(vocab)
    unigram = np.bincount(ids, minlength=n).astype(np.float64)
    bigram = np.bincount(ids[:-1] * n + ids[1:], minlength=n * n).reshape(n, n).astype(np.float64)
    return CorpusStats(vocab, unigram, bigram, source)


def stats_from_file(path: str | Path) -> CorpusStats:
    """Statistics of a UTF-8 text file, with a one-line error for unusable files."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"data_args.corpus: no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"data_args.corpus: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise CorpusError(f"data_args.corpus: cannot read {path}: {err.strerror}") from None
    if not text:
        raise CorpusError(f"data_args.corpus: {path} is empty")
    return stats_from_text(text, source=str(path))


def bundled_stats() -> CorpusStats:
    """The tiny Shakespeare table shipped with the package (N = 65)."""
    raw = json.loads(resources.files("birth.data").joinpath(BUNDLED_TABLE).read_text(encoding="utf-8"))
    return CorpusStats(
        vocab=tuple(raw["vocab"]),
        unigram_counts=np.asarray(raw["unigram_counts"], dtype=np.float64),
        bigram_counts=np.asarray(raw["bigram_counts"], dtype=np.float64),
        source=raw["source"],
    )


def load_stats(corpus: str | None) -> CorpusStats:
    """The bundled table when ``corpus`` is empty, else the statistics of that file."""
    return stats_from_file(corpus) if corpus else bundled_stats()
