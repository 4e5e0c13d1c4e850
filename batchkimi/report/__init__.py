"""``batchkimi report``: what a run (finished or not) did, as tables and pictures."""
