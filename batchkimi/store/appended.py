"""Whether a run only adds rows to the last run's: then it carries those as they are.

A nightly job's manifest grows at its end, and the last run left every row it had
settled. Going through a million rows again to find the one new row cost about 1.9 s
of a 2.5 s resume's own work (row keys, the register's cache, the answered set).
When all of the following hold, the rows the last run registered stand as they are,
and a run builds, looks up and registers only the rows after them: their requests
are asked about in the journal alone, and they go to the register's tail
(``store.rows``). (Every row is still parsed: the manifest is checked whole before
anything is sent, and the rows carried are counted as parsed.)

- the manifest is a text file (CSV, TSV, JSONL) that only grew: its first bytes are
  the file the last run read, whole lines (``state.stamp_growth``);
- the settings that shape requests and rows are the last run's;
- the last run left nothing to send (no row pending, none with local media, whose
  files may change under an unchanged manifest) and no row with a problem (those
  are looked at again every run);
- no answer came since it built its outputs (every journal file as it was), and
  the register there is the one it left (``state.settled``), written under the
  same request settings and with the columns this run writes.

Anything else takes the full path, which is never wrong, only slower. Even then, a
run of a settled job (``state.settled``: the same settings, nothing left to send,
no answer since) asks the journal only about the rows it builds (new or edited
ones): a row whose request the row cache found is answered already.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
import pyarrow.parquet as pq

from batchkimi.store.rows import RegisterFiles
from batchkimi.store.state import RunState

#: manifest formats whose rows are whole lines, so a grown file is its old rows
#: and then new ones
TEXT_FORMATS = frozenset({"csv", "tsv", "jsonl"})
#: a tail grows by each run that appends; past this share of the base, the full
#: path writes one base again (rows carried in the tail are copied every append)
_TAIL_SHARE = 4


def carried_rows(
    previous: RunState,
    register: RegisterFiles | None,
    *,
    grown: bool,
    rows_now: int,
    digest: str | None,
    kept: Mapping[str, str],
) -> int:
    """How many rows, from the first, a run of a settled job (``state.settled``)
    carries from the last one as they are (see the module docstring); 0 when it
    reads every row.

    ``register`` is the last run's (``settled`` checked its files against the
    state, so it holds ``previous.rows`` rows). ``grown``: the manifest is a text
    file that only grew (``stamp_growth``); ``rows_now``: the rows it has now;
    ``digest``: this run's request digest (``cache_digest``); ``kept``: the
    manifest columns it keeps, and as which output columns."""
    if register is None or digest is None or not grown or previous.local_media:
        return 0
    if (
        not register.keyed_under(digest)
        or not register.written_with(kept)
        or rows_now < previous.rows
    ):
        return 0
    if register.tail is not None:
        tail = pq.read_metadata(register.tail).num_rows
        if tail * _TAIL_SHARE > previous.rows - tail:  # against the base's rows
            return 0
    problems = register.scan().select(pl.col("_problem_code").is_not_null().any())
    if problems.collect().item():
        return 0
    return previous.rows
