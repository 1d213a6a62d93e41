"""Writes the bundled character statistics of a corpus (default: ../shared/data/tinyshakespeare.txt).

Only the counts are committed, never the text:
    python scripts/make_corpus_stats.py [CORPUS] [--out src/birth/tasks/triggers/tinyshakespeare_stats.json]
"""
import argparse
import json
from pathlib import Path

from birth.tasks.triggers.corpus import stats_from_file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=str(ROOT.parent / "shared/data/tinyshakespeare.txt"))
    parser.add_argument("--out", default=str(ROOT / "src/birth/tasks/triggers/tinyshakespeare_stats.json"))
    args = parser.parse_args()
    stats = stats_from_file(args.corpus)
    table = stats.to_json()
    table["source"] = Path(args.corpus).name
    Path(args.out).write_text(json.dumps(table, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{args.out}: N={stats.num_tokens}, {int(stats.unigram_counts.sum())} characters")


if __name__ == "__main__":
    main()
