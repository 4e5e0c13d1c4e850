"""Whether a run only adds rows to the last run's: then it carries those as they are.

A nightly job's manifest grows at its end, and the last run left every row it had
settled. Reading a million rows again to find the one new row cost about 1.9 s of a
2.5 s resume's own work (row keys, the register's cache, the answered set). When all
of the following hold, the rows the last run registered stand as they are, and a
run reads only the rows after them, asks the journal about those rows' requests
alone, and writes them to the register's tail (``store.rows``):

- the manifest is a text file (CSV, TSV, JSONL) that only grew: its first bytes are
  the file the last run read, whole lines (``state.stamp_growth``);
- the settings that shape requests and rows are the last run's;
- the last run left nothing to send (no row pending, none with local media, whose
  files may change under an unchanged manifest) and no row with a problem (those
  are looked at again every run);
- no answer came since it built its outputs (every journal file as it was);
- its register is there, whole, written under the same request settings and with
  the columns this run writes.

Anything else takes the full path, which is never wrong, only slower.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from batchkimi.store.rows import RegisterFiles
from batchkimi.store.state import RunState, journal_sizes

#: manifest formats whose rows are whole lines, so a grown file is its old rows
#: and then new ones
TEXT_FORMATS = frozenset({"csv", "tsv", "jsonl"})
#: a tail grows by each run that appends; past this share of the base, the full
#: path writes one base again (rows carried in the tail are copied every append)
_TAIL_SHARE = 4


def carried_rows(
    previous: RunState | None,
    register: RegisterFiles | None,
    *,
    grown: bool,
    settings: str,
    digest: str | None,
    kept: Mapping[str, str],
    state_dir: Path,
) -> int:
    """How many rows, from the first, this run carries from the last one as they
    are (see the module docstring); 0 when it takes the full path. ``grown``: the
    manifest is a text file that only grew (``stamp_growth``); ``settings`` and
    ``digest``: this run's ``settings_key`` and request digest (``cache_digest``);
    ``kept``: the manifest columns it keeps, and as which output columns."""
    if (
        previous is None
        or register is None
        or digest is None
        or not grown
        or previous.settings != settings
        or previous.pending
        or previous.local_media
    ):
        return 0
    if (
        not register.keyed_under(digest)
        or not register.written_with(kept)
        or register.rows != previous.rows
    ):
        return 0
    if register.tail is not None:
        tail = pq.read_metadata(register.tail).num_rows
        if tail * _TAIL_SHARE > previous.rows - tail:  # against the base's rows
            return 0
    if previous.journals != journal_sizes(state_dir):
        return 0
    problems = register.scan().select(pl.col("_problem_code").is_not_null().any())
    if problems.collect().item():
        return 0
    return previous.rows
