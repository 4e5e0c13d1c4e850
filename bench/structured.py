"""Structured answers: what checking, typed columns and repairs cost, and what they buy.

The simulator runs in its own process on core 0 with no latency; each run is a fresh
``batchkimi run`` on core 1, so the client's own work is what is measured. Three
cases, side by side in one run:

1. plain: the labelling job with a free-text answer (the baseline);
2. structured: the same job with a JSON Schema (sentiment enum, aspects as an array
   of enums, confidence 0..1), asked through a forced tool call, every answer checked
   and decoded into typed columns;
3. repairs: the structured job against a simulator that answers 20% of attempts
   invalidly (5% each: a wrong enum value, a missing property, a wrong type, broken
   JSON), with the default two repairs.

    .venv/bin/python bench/structured.py [--rows 5000] [--concurrency 64]

Targets (issue 11): structured / plain rows per second at least 0.8; with 20% invalid
answers at least 99% of rows end ok, every repair counted on its row and priced.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import polars as pl
from harness import batchkimi_run, bench_env, measure, simulator

PROMPT = (
    "Review: {review}\nGive its sentiment, the aspects it names and your confidence."
)
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "aspects": {
            "type": "array",
            "items": {
                "type": "string",
                "enum": ["quality", "price", "delivery", "design", "support"],
            },
            "uniqueItems": True,
        },
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["sentiment", "aspects", "confidence"],
    "additionalProperties": False,
}
INVALID = ("enum=0.05", "missing=0.05", "type=0.05", "json=0.05")
PRICE_IN, PRICE_OUT = 4.0, 21.0  # kimi-k2.5, Beijing, CNY per 1M tokens (FACTS §6.3)


def manifest(folder: Path, rows: int) -> Path:
    path = folder / "reviews.csv"
    pl.DataFrame(
        {
            "id": [f"r{i:06d}" for i in range(rows)],
            "review": [
                f"Review {i}: the kettle boils fast but the lid broke."
                for i in range(rows)
            ],
        }
    ).write_csv(path)
    return path


def command(
    folder: Path, url: str, name: str, concurrency: int, *extra: str
) -> list[str]:
    return batchkimi_run(
        folder / "reviews.csv",
        folder / name,
        url,
        *("--model", "kimi-k2.5", "--concurrency", str(concurrency), *extra),
        prompt=PROMPT,
    )


def rate(folder: Path, name: str) -> float:
    summary = json.loads((folder / name / "summary.json").read_text())
    return float(summary["overall"]["rows_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest(folder, args.rows)
        schema = folder / "schema.json"
        schema.write_text(json.dumps(SCHEMA))
        env = bench_env(str(folder / "state"))
        # no implicit cache hits: the bill is then tokens times prices, checkable
        quiet = ("--implicit-cache-hit-rate", "0")
        with simulator(*quiet, core=0) as url:
            plain = measure(
                command(folder, url, "plain", args.concurrency), env=env, core=1
            )
            typed = measure(
                command(
                    folder, url, "typed", args.concurrency, "--schema", str(schema)
                ),
                env=env,
                core=1,
            )
        invalid = (f"--invalid-answer-rate={kind}" for kind in INVALID)
        with simulator(*quiet, *invalid, core=0) as url:
            repairs = command(
                folder, url, "repairs", args.concurrency, "--schema", str(schema)
            )
            done = subprocess.run(repairs, env=env, capture_output=True, check=False)
            assert done.returncode in (0, 1), done.stderr.decode()[-2000:]

        print(f"{args.rows:,} rows, concurrency {args.concurrency}, zero latency")
        print("case         wall s   rows/s (wall)   rows/s (sending)   peak MB")
        for name, run in (("plain", plain), ("structured", typed)):
            key = "typed" if name == "structured" else name
            print(
                f"{name:<12} {run.wall_s:6.2f}   {args.rows / run.wall_s:13,.0f}"
                f"   {rate(folder, key):16,.0f}   {run.peak_mb:7.1f}"
            )
        print(
            f"structured / plain: {plain.wall_s / typed.wall_s:.2f} (wall), "
            f"{rate(folder, 'typed') / rate(folder, 'plain'):.2f} (sending); "
            "target 0.8"
        )

        results = pl.read_parquet(folder / "repairs" / "results.parquet")
        ok = results.filter(pl.col("status") == "ok").height
        repaired = results.filter(pl.col("repairs") > 0)
        priced = results.filter(pl.col("input_tokens").is_not_null())
        expected = (
            priced["input_tokens"] * PRICE_IN + priced["output_tokens"] * PRICE_OUT
        ) / 1_000_000
        priced_right = ((priced["cost"] - expected).abs() < 1e-9).all()
        counted = (results["attempts"] == results["repairs"] + 1).all()
        causes: dict[str, int] = {}
        for raw in results["repair_causes"].drop_nulls():
            for cause, n in json.loads(raw).items():
                causes[cause] = causes.get(cause, 0) + n
        print()
        print("with 20% of attempts answered invalidly (two repairs allowed):")
        print(
            f"  ok {ok:,} of {results.height:,} ({ok / results.height:.2%}; target "
            f"99%), invalid {results.height - ok:,}"
        )
        print(
            f"  rows repaired {repaired.height:,}, repairs "
            f"{int(results['repairs'].sum()):,} by cause {dict(sorted(causes.items()))}"
        )
        print(
            f"  every repair an attempt on its row: {counted}; every row's cost its "
            f"tokens at the price: {priced_right}; cost "
            f"{float(results['cost'].sum()):.4f} CNY"
        )


if __name__ == "__main__":
    main()
