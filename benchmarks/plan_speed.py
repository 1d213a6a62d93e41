"""Planning speed: ``birth sweep`` of 10^3 and 10^4 points with ``--dry-run`` (every config resolved,
validated and named, nothing trained), wall seconds of the whole command, and seconds per point
beyond the command's start-up (the 10^1-point run). Linear planning shows as a constant per point.

    python benchmarks/plan_speed.py
"""
import subprocess
import sys
import tempfile
import time


def sweep_seconds(points: int, out: str) -> float:
    """Wall seconds of `birth sweep --dry-run` over a grid of ``points`` points (two keys)."""
    side = int(round(points ** 0.5))
    rows, cols = (side, points // side) if side * side == points else (points, 1)
    lr = ",".join(f"{0.001 * (i + 1):.4f}" for i in range(rows))
    wd = ",".join(f"{1e-5 * (i + 1):.7f}" for i in range(cols))
    cmd = [sys.executable, "-m", "birth", "sweep", "--preset", "quick", f"optim_args.lr={lr}",
           f"optim_args.weight_decay={wd}", "--dry-run", "--out", out]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base = sweep_seconds(10, f"{tmp}/s10")
        print(f"birth sweep --dry-run, 10 points: {base:6.2f} s (start-up)")
        for points in (1_000, 10_000):
            seconds = sweep_seconds(points, f"{tmp}/s{points}")
            print(f"birth sweep --dry-run, {points} points: {seconds:6.2f} s "
                  f"({(seconds - base) / points * 1e3:.3f} ms per point beyond start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
