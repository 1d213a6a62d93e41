"""Runs every benchmark of ``birth bench`` on one thread and on all threads (prints ratios)."""
import os
import subprocess
import sys

threads = os.cpu_count() or 1
for what, n in (("sampler", 1), ("sampler", threads), ("step", threads)):
    print(f"$ birth bench {what} --threads {n}", flush=True)
    subprocess.run([sys.executable, "-m", "birth", "bench", what, "--threads", str(n)], check=True)
