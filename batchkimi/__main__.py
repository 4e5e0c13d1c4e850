"""``python -m batchkimi`` is the ``batchkimi`` command."""

from __future__ import annotations

from batchkimi.cli import main

main()
