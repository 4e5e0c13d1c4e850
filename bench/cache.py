"""The explicit context cache on a labelling job: what 1,000 rows sharing one long
instruction cost with it, against the same job without any cache.

The simulator (its own process) prices nothing itself; it reports the cache in each
answer's usage as the service does (FACTS §6.3: a creation, then hits that renew the
5 minutes), and batchkimi prices every row by the published rules: kimi-k2.5 in
Beijing, ¥4 a million input tokens, a hit at 10%, a creation at 125%. The simulator's
implicit cache is off, so the baseline is the full price of every input token.

    .venv/bin/python bench/cache.py [--rows 1000] [--instruction-tokens 3000]

Target (issue 16): the input cost with --cache explicit at most 0.25 of the cost
without a cache.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import polars as pl
from harness import batchkimi_run, bench_env, simulator

PRICE_IN, PRICE_OUT = 4.0, 21.0  # CNY per 1M tokens (FACTS §6.3)
RULE = (
    "Label the review's sentiment as positive, negative or mixed. Read the whole "
    "review before you decide, weigh complaints against praise, and ignore "
    "shipping remarks unless they are about the product itself. "
)


def instruction(tokens: int) -> str:
    """About ``tokens`` tokens as the service (and the simulator) counts them:
    four characters each."""
    return (RULE * (tokens * 4 // len(RULE) + 1))[: tokens * 4]


def input_cost(results: pl.DataFrame) -> float:
    billed = results["cost"] - results["output_tokens"] * PRICE_OUT / 1e6
    return float(billed.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--instruction-tokens", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = folder / "reviews.csv"
        pl.DataFrame(
            {
                "id": [f"r{i:05d}" for i in range(args.rows)],
                "review": [
                    f"Review {i}: sturdy, but the lid rattles."
                    for i in range(args.rows)
                ],
            }
        ).write_csv(manifest)
        system = instruction(args.instruction_tokens)
        env = bench_env(str(folder / "state"))
        spent = {}
        with simulator("--implicit-cache-hit-rate", "0") as url:
            for name, extra in (("none", ()), ("explicit", ("--cache", "explicit"))):
                command = batchkimi_run(
                    manifest,
                    folder / name,
                    url,
                    *("--model", "kimi-k2.5", "--system", system, *extra),
                    prompt="Review: {review}",
                )
                subprocess.run(command, env=env, check=True, capture_output=True)
                spent[name] = pl.read_parquet(folder / name / "results.parquet")
        base, cached = spent["none"], spent["explicit"]
        created = int(cached["cache_creation_tokens"].sum())
        hits = int((cached["cached_tokens"] > 0).sum())
        print(
            f"{args.rows:,} rows sharing a {args.instruction_tokens:,}-token "
            "instruction, kimi-k2.5 prices"
        )
        print(f"  input tokens: {int(base['input_tokens'].sum()):,} (both runs)")
        print(
            f"  explicit cache: {created:,} tokens written once, hits on {hits:,} "
            f"rows ({int(cached['cached_tokens'].sum()):,} tokens)"
        )
        without, with_cache = input_cost(base), input_cost(cached)
        print(f"  input cost without a cache:   {without:.4f} CNY")
        print(f"  input cost with --cache explicit: {with_cache:.4f} CNY")
        print(f"  ratio: {with_cache / without:.3f} (target at most 0.25)")


if __name__ == "__main__":
    main()
