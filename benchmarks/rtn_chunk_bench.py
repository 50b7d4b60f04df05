"""Per-element cost of the streamed ``rtn`` quantizer against its chunk size.

``olivine_modelbuilder.lowmem`` quantizes a weight ``W[K, N]`` a column chunk at a time
(at most ``ELEMENTS_PER_CHUNK`` elements). Each chunk goes through several float64
passes, so the chunk size decides whether they run from cache or from memory. This
times ``_rtn_chunk`` on random float32 chunks of the row counts of Qwen2.5-0.5B (896:
the 8-bit LM head) and Qwen2.5-7B (3584; 18944: the down projection), from 8 * 2**20
down to 2**19 elements, one thread, best of ``--repeat``:

    python benchmarks/rtn_chunk_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    """Print a table of ns per element by rows and chunk size."""
    import numpy as np

    from olivine_modelbuilder.lowmem import _rtn_chunk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| rows | bits | chunk elements | columns | ns per element |")
    print("| --- | --- | --- | --- | --- |")
    for rows, bits in ((896, 8), (3584, 4), (18944, 4)):
        for elements in (8 << 20, 4 << 20, 2 << 20, 1 << 20, 1 << 19):
            cols = max(1, min(8192, elements // rows))
            chunk = rng.standard_normal((rows, cols), dtype=np.float32)
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                _rtn_chunk(chunk, bits, 128, True)
                best = min(best, time.perf_counter() - start)
            print(f"| {rows} | {bits} | {elements >> 10} Ki | {cols} | "
                  f"{best / (rows * cols) * 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()
