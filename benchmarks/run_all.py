"""Runs every benchmark of ``birth bench`` with the settings of docs/runs.md#speed (prints ratios)."""
import os
import subprocess
import sys

threads = str(os.cpu_count() or 1)
BENCHES = [
    ["sampler", "--threads", "1"],
    ["sampler", "--threads", threads],
    ["step", "--threads", threads, "--batch", "64", "--seq-len", "128", "--dim", "256", "--repeats", "15"],
    ["step", "--threads", threads, "--batch", "512", "--seq-len", "256", "--dim", "128", "--repeats", "7"],
    ["stack", "--threads", threads, "--runs", "6", "--steps", "100", "--batch", "64", "--seq-len", "128",
     "--dim", "128", "--repeats", "1"],
    ["induction"],
]
for args in BENCHES:
    print("$ birth bench " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "birth", "bench", *args], check=True)
