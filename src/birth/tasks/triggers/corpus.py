"""Character statistics (unigram and bigram counts) of a text corpus.

The bundled table holds the counts of tiny Shakespeare (made by ``scripts/make_corpus_stats.py``);
any UTF-8 text file can replace it. A file is read in chunks (memory stays bounded whatever its
size: about 100 MB above the process), and its counts are cached under ``$BIRTH_CACHE_DIR`` (default
``~/.cache/birth``) by the sha256 of its content, so a second run on the same file reads a small
table instead.
"""
from __future__ import annotations

import codecs
import hashlib
import functools
import json
import os
import sys
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

BUNDLED_TABLE = "tinyshakespeare_stats.json"
MAX_VOCAB = 1024          # distinct characters a corpus may have: N x N bigram tables, N-way logits
CHUNK_BYTES = 4 << 20     # bytes read at a time (peak memory is about 25 times this)
PROGRESS_BYTES = 64 << 20  # files at least this large show a progress bar while they are counted
CACHE_VERSION = 1


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


def stats_from_file(path: str | Path, cache: bool = True) -> CorpusStats:
    """Statistics of a UTF-8 text file, counted by streaming, with a one-line error for unusable files."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"data_args.corpus: no such file: {path}")
    try:
        st = path.stat()
        return _cached_stats(str(path.resolve()), st.st_size, st.st_mtime_ns, cache)
    except OSError as err:
        raise CorpusError(f"data_args.corpus: cannot read {path}: {err.strerror}") from None


@lru_cache(maxsize=8)
def _cached_stats(path: str, size: int, mtime_ns: int, cache: bool) -> CorpusStats:
    """Per process by (path, size, mtime); across processes by content hash (size and mtime only
    decide when to hash again)."""
    digest = _sha256(Path(path), size) if cache else ""
    where = cache_dir() / f"corpus-{digest}.json" if cache else None
    if where is not None and where.exists():
        try:
            raw = json.loads(where.read_text(encoding="utf-8"))
            if raw.get("version") == CACHE_VERSION:
                return _from_json(raw, source=path)
        except (OSError, ValueError):
            pass  # a damaged cache entry is counted again and rewritten
    stats = _count_file(Path(path), size)
    if where is not None:
        _write_cache(where, {**stats.to_json(), "version": CACHE_VERSION, "sha256": digest})
    return stats


def cache_dir() -> Path:
    return Path(os.environ.get("BIRTH_CACHE_DIR")
                or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "birth")


def _write_cache(where: Path, raw: dict) -> None:
    tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(raw), encoding="utf-8")
        os.replace(tmp, where)
    except OSError:
        tmp.unlink(missing_ok=True)  # a cache that cannot be written only costs time next run


def _sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, _progress(size, f"hashing {path.name}") as bar:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _progress(size: int, what: str):
    from tqdm.auto import tqdm
    return tqdm(total=size, unit="B", unit_scale=True, desc=f"birth: {what}", file=sys.stderr,
                disable=size < PROGRESS_BYTES, leave=False)


def _count_file(path: Path, size: int) -> CorpusStats:
    """Unigram and bigram counts by chunks: code points are counted with ``np.bincount`` over all of
    Unicode, then mapped to dense ids in order of appearance (at most MAX_VOCAB of them)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    ids_of = np.full(0x110000, -1, dtype=np.int32)      # code point -> dense id
    chars: list[int] = []                               # dense id -> code point
    unigram = np.zeros(MAX_VOCAB, dtype=np.int64)
    bigram = np.zeros(MAX_VOCAB * MAX_VOCAB, dtype=np.int64)
    previous, offset = np.zeros(0, dtype=np.int32), 0   # the last id of the chunk before
    with open(path, "rb") as f, _progress(size, f"counting {path.name}") as bar:
        while True:
            raw = f.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])         # bytes of a character cut by the chunk before
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                raise CorpusError(f"data_args.corpus: {path} is not UTF-8 text ({err.reason} at byte "
                                  f"{offset - pending + err.start})") from None
            if "\x00" in text:
                raise CorpusError(f"data_args.corpus: {path} holds NUL bytes: not a text file")
            offset += len(raw)
            bar.update(len(raw))
            if text:
                points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
                fresh = np.flatnonzero((np.bincount(points, minlength=0x110000) > 0) & (ids_of < 0))
                if fresh.size:
                    if len(chars) + fresh.size > MAX_VOCAB:
                        raise CorpusError(f"data_args.corpus: {path} has more than {MAX_VOCAB} distinct characters "
                                          f"(a character vocabulary is limited to N <= {MAX_VOCAB})")
                    ids_of[fresh] = np.arange(len(chars), len(chars) + fresh.size, dtype=np.int32)
                    chars += fresh.tolist()
                ids = np.concatenate([previous, ids_of[points]])
                unigram += np.bincount(ids[len(previous):], minlength=MAX_VOCAB)
                bigram += np.bincount(ids[:-1] * MAX_VOCAB + ids[1:], minlength=MAX_VOCAB * MAX_VOCAB)
                previous = ids[-1:]
            if not raw:
                break
    if not chars:
        raise CorpusError(f"data_args.corpus: {path} is empty")
    if len(chars) < 2:
        raise CorpusError(f"data_args.corpus: {path}: needs at least 2 distinct characters, found {len(chars)}")
    order = np.argsort(chars)                            # the vocabulary sorted, as sorted(set(text))
    n = len(chars)
    table = bigram.reshape(MAX_VOCAB, MAX_VOCAB)[:n, :n]
    return CorpusStats(tuple(chr(chars[i]) for i in order), unigram[order].astype(np.float64),
                       table[np.ix_(order, order)].astype(np.float64), str(path))


def _from_json(raw: dict, source: str) -> CorpusStats:
    return CorpusStats(vocab=tuple(raw["vocab"]), unigram_counts=np.asarray(raw["unigram_counts"], dtype=np.float64),
                       bigram_counts=np.asarray(raw["bigram_counts"], dtype=np.float64), source=source)


@functools.lru_cache(maxsize=1)
def bundled_stats() -> CorpusStats:
    """The tiny Shakespeare table shipped with the package (N = 65); read once per process (it never
    changes, and every config check reads it)."""
    raw = json.loads(resources.files("birth.tasks.triggers").joinpath(BUNDLED_TABLE).read_text(encoding="utf-8"))
    return _from_json(raw, source=raw["source"])


def load_stats(corpus: str | None) -> CorpusStats:
    """The bundled table when ``corpus`` is empty, else the statistics of that file."""
    return stats_from_file(corpus) if corpus else bundled_stats()
