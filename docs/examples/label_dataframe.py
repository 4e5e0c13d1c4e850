"""Label a polars DataFrame with a schema, from Python, on the bundled simulator.

    .venv/bin/python docs/examples/label_dataframe.py [OUTPUT_FOLDER]

Drop ``simulate=True`` and set DASHSCOPE_API_KEY to run it for real. Running it again
resumes: nothing already answered is sent twice.
"""

from __future__ import annotations

import sys
import tempfile

import polars as pl

import batchkimi

reviews = pl.DataFrame(
    {
        "id": ["r1", "r2", "r3"],
        "review": [
            "Boils fast, and the lid stays shut.",
            "Broke after two days; the seller never answered.",
            "Lovely lamp, though a little dim.",
        ],
    }
)
output = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()

results = batchkimi.run(
    reviews,
    prompt="Review: {review}\nGive its sentiment and how sure you are.",
    schema={
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["sentiment", "confidence"],
    },
    model="kimi-k2.5",
    output=output,
    simulate=True,
)
print(results.select("id", "status", "sentiment", "confidence"))
assert results["sentiment"].dtype == pl.String
assert results["confidence"].dtype == pl.Float64
