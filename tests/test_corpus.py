import numpy as np
import pytest

from birth.core.corpus import CorpusError, bundled_stats, stats_from_file, stats_from_text


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
