"""Plan a job from a TOML job spec, check its cost, then run it: a nightly script.

    .venv/bin/python docs/examples/plan_then_run.py [OUTPUT_FOLDER]

The same checks as `batchkimi plan` and `batchkimi run`; a budget that the plan says
is too small stops the script before anything is sent.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import batchkimi

spec = Path(__file__).resolve().parents[2] / "jobs" / "label_reviews.toml"
output = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
job = batchkimi.job(spec, output=output, limit=40)

plan = batchkimi.plan(job=job, simulate=True)
estimate = plan.models["kimi-k2.5"]
print(f"{plan.to_send} rows to send; at most {estimate.worst_cost} {estimate.currency}")
if (estimate.worst_cost or 0) > 1.0:
    sys.exit("over budget: not run")

results = batchkimi.run(job=job, simulate=True)
print(results["status"].value_counts())
