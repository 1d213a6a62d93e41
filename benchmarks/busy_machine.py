"""The quick demo on an idle machine, then beside one busy competing process, side by side.

    python benchmarks/busy_machine.py            # birth's own thread choice
    python benchmarks/busy_machine.py --threads 2  # torch's default on 2 cores, for comparison

Prints both wall times and their ratio (goal: at most 2). The competitor is a pure-Python loop
that keeps one core busy; the demo is `birth train --preset quick` into a temporary folder.
"""
import argparse
import subprocess
import sys
import tempfile
import time

BUSY = "while True: pass"


def demo(threads, out) -> float:
    cmd = [sys.executable, "-m", "birth", "train", "--preset", "quick", "--quiet", "--out", out]
    if threads:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, help="passed to birth train (default: its own choice)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        idle = demo(args.threads, f"{tmp}/idle")
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
        try:
            time.sleep(1.0)  # the competitor is running before the demo looks at the cores
            loaded = demo(args.threads, f"{tmp}/busy")
        finally:
            busy.kill()
    print(f"quick demo, threads {args.threads or 'auto'}: idle {idle:.1f} s, beside one busy process "
          f"{loaded:.1f} s, ratio {loaded / idle:.2f} (goal <= 2)")


if __name__ == "__main__":
    main()
