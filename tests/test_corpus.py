import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from birth.tasks.triggers import corpus
from birth.tasks.triggers.corpus import CorpusError, bundled_stats, stats_from_file, stats_from_text


def test_bundled_table_is_tiny_shakespeare_statistics():
    s = bundled_stats()
    assert s.num_tokens == 65
    assert s.unigram_counts.sum() == 1_115_394
    assert s.bigram_counts.sum() == 1_115_394 - 1  # every pair of consecutive characters
    assert list(s.vocab) == sorted(s.vocab)
    entropy = -(s.marginal * np.log(s.marginal)).sum()
    assert entropy == pytest.approx(3.313, abs=1e-3)  # SPEC §1.5
    np.testing.assert_allclose(s.cond.sum(1), 1.0)


def test_stats_from_text_counts_pairs():
    s = stats_from_text("abab")
    assert s.vocab == ("a", "b")
    np.testing.assert_array_equal(s.unigram_counts, [2, 2])
    np.testing.assert_array_equal(s.bigram_counts, [[0, 2], [1, 0]])
    # 'b' is followed by 'a' once: its conditional is exact; no row divides by zero
    np.testing.assert_allclose(s.cond, [[0, 1], [1, 0]])


def test_character_never_followed_gets_unigram_row():
    s = stats_from_text("aab")  # 'b' only at the end
    np.testing.assert_allclose(s.cond[1], s.marginal)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "is empty"),
    (b"\xff\xfe\x00bad", "not UTF-8"),
    (b"aaaa", "at least 2 distinct"),
])
def test_unusable_corpus_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message) as err:
        stats_from_file(path)
    assert "\n" not in str(err.value)


def test_a_file_is_counted_by_chunks_exactly_as_the_whole_text(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 5)  # multi-byte characters cut across chunks
    text = "To be, or not to be: é€𝄞 that is the question.\nAy, é there's the rub 𝄞."
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    a, b = stats_from_text(text), stats_from_file(path, cache=False)
    assert a.vocab == b.vocab
    assert np.array_equal(a.unigram_counts, b.unigram_counts) and np.array_equal(a.bigram_counts, b.bigram_counts)


def test_counts_are_cached_by_content_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRTH_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "c.txt"
    path.write_text("abcabd" * 100, encoding="utf-8")
    first = stats_from_file(path)
    (entry,) = (tmp_path / "cache").glob("corpus-*.json")
    assert entry.name == f"corpus-{hashlib.sha256(path.read_bytes()).hexdigest()}.json"
    corpus._cached_stats.cache_clear()
    monkeypatch.setattr(corpus, "_count_file", lambda *a: pytest.fail("counted again despite the cache"))
    copy = tmp_path / "copy.txt"                        # another name, the same content: the same entry
    copy.write_bytes(path.read_bytes())
    again = stats_from_file(copy)
    assert again.vocab == first.vocab and np.array_equal(again.bigram_counts, first.bigram_counts)


@pytest.mark.parametrize("content, message", [
    ("".join(chr(0x4E00 + i) for i in range(corpus.MAX_VOCAB + 1)).encode(),
     f"more than {corpus.MAX_VOCAB} distinct characters"),
    (b"text\x00\x01\x02binary", "holds NUL bytes: not a text file"),
    ("abc".encode() + b"\xe2\x82", "not UTF-8 text (unexpected end of data at byte 3)"),
])
def test_files_that_are_not_a_character_corpus_get_one_line(tmp_path, content, message):
    path = tmp_path / "c.bin"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=re.escape(message)) as err:
        stats_from_file(path, cache=False)
    assert "\n" not in str(err.value) and str(path.name) in str(err.value)


@pytest.mark.slow
def test_a_1_gb_corpus_is_counted_in_bounded_memory(tmp_path):
    """A real 1 GB file, in a fresh process: peak RSS at most 300 MB above the process before counting."""
    import subprocess
    import sys
    path = tmp_path / "big.txt"
    block = (Path(__file__).parents[1] / "README.md").read_bytes() * 50
    with open(path, "wb") as f:
        while f.tell() < 1 << 30:
            f.write(block)
    script = (
        "import resource, sys, time\n"
        "from birth.tasks.triggers.corpus import stats_from_file\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter(); s = stats_from_file(sys.argv[1], cache=False)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(base, peak, s.num_tokens, int(s.unigram_counts.sum()), round(time.perf_counter() - t, 1))\n")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    base, peak, n, chars, seconds = done.stdout.split()
    assert (int(peak) - int(base)) / 1024 <= 300, done.stdout   # ru_maxrss is in kB on Linux
    assert int(chars) > 0.9 * (1 << 30) and 2 <= int(n) <= corpus.MAX_VOCAB
    print(f"1 GB: {seconds} s, peak {int(peak) // 1024} MB, base {int(base) // 1024} MB")
