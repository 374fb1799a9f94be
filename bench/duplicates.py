"""All-pairs near-duplicate search: vectorised XOR + popcount vs a Python loop over pairs.

    python bench/duplicates.py --n 1000 5000 20000

Random grey hashes shaped as utils/data/duplicates.py makes them (N images x 2 views x 2
hashes, uint64), searched with utils.data.duplicates.grey_pairs (chunks of XOR + numpy.bitwise_count)
and, for the smallest N, with a plain Python double loop computing the same distances
with int.bit_count. Prints time, ns per pair and the projected time for 100,000 images
(5e9 pairs); absolute numbers depend on the machine and its load.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.data.duplicates import VIEW_PAIRS, grey_pairs  # noqa: E402


def python_loop(h, max_grey):
    """The same search as grey_pairs, one pair at a time in Python."""
    rows = [[[int(v) for v in view] for view in img] for img in h]
    out = []
    for i in range(len(rows)):
        a = rows[i]
        for j in range(i + 1, len(rows)):
            b = rows[j]
            grey = min((a[p][0] ^ b[q][0]).bit_count() + (a[p][1] ^ b[q][1]).bit_count() for p, q in VIEW_PAIRS)
            if grey <= max_grey:
                out.append((i, j))
    return out


def main(args):
    rng = np.random.default_rng(0)
    rows = []
    for k, n in enumerate(sorted(args.n)):
        h = rng.integers(0, 2**63, size=(n, 2, 2), dtype=np.uint64)
        pairs = n * (n - 1) / 2
        t = time.perf_counter()
        found = grey_pairs(h, 10)
        rows.append((f"grey_pairs (numpy), N={n}", time.perf_counter() - t, pairs))
        if k == 0:
            t = time.perf_counter()
            slow = python_loop(h, 10)
            rows.append((f"Python loop, N={n}", time.perf_counter() - t, pairs))
            assert slow == list(zip(found[0].tolist(), found[1].tolist()))
    base = rows[0][1] / rows[0][2]
    print(f"| method | seconds | ns/pair | projected 100k images (s) | time per pair vs numpy N={args.n[0]} |")
    print("|---|---:|---:|---:|---:|")
    for name, sec, pairs in rows:
        per = sec / pairs
        print(f"| {name} | {sec:.2f} | {per * 1e9:.1f} | {per * 5e9:.0f} | {per / base:.2f}x |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[1000, 5000, 20000],
                   help="numbers of images; the smallest is also run by the Python loop (default: 1000 5000 20000)")
    main(p.parse_args())
