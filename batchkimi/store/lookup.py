"""The journal asked about the few rows a run builds, instead of every answer read.

A run of a settled job (``state.settled``) needs an answer looked up only for the
rows it builds (new or edited ones): reading the whole answered set of a million
rows first costs more than asking about a few rows twice.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from batchkimi.records import RowResult
from batchkimi.store.answers import AnsweredSet
from batchkimi.store.journal import answered_set
from batchkimi.store.unfinished import answers_in_hand, recorded_answers


class JournalLookup:
    """The answered set's ``unanswered`` for a run with few rows to ask about (a
    settled job, ``state.settled``): the first calls read the journal for the
    fingerprints asked (0.16 s a call at a million answers) instead of every
    answer up front (0.45 s); a run that keeps asking gets the whole set then.
    Rows found left with a paid answer in hand are added to ``in_hand``, the
    sender's, which carries on from them."""

    #: calls answered by reading the journal for what they ask; the next one
    #: reads the whole answered set (about three such calls' time)
    LOOKUPS = 2

    def __init__(
        self, folder: Path, rerun: frozenset[str], in_hand: dict[str, RowResult]
    ) -> None:
        self.folder = folder
        self.rerun = rerun
        self.in_hand = in_hand
        self.lookups = 0
        self._whole: AnsweredSet | None = None

    def unanswered(self, fingerprints: pl.Series) -> pl.Series:
        """A mask over ``fingerprints``: true where one has no standing answer."""
        if self._whole is None and self.lookups >= self.LOOKUPS:
            self._whole = answered_set(self.folder, self.rerun)
            self.in_hand.update(answers_in_hand(self.folder, self.rerun))
        if self._whole is not None:
            return self._whole.unanswered(fingerprints)
        self.lookups += 1
        asked = fingerprints.drop_nulls().unique().to_list()
        standing, held = recorded_answers(self.folder, asked, self.rerun)
        self.in_hand.update(held)
        known = pl.Series(list(standing), dtype=pl.String())
        found = fingerprints.is_in(known.implode()).fill_null(False)
        return (~found).alias("unanswered")
