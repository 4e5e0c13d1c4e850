"""The cost budget of a run (``--max-cost``): pure arithmetic, no clock, no I/O.

Invariant: ``spent + reserved <= limit`` at all times. A request reserves its worst-case
cost before it is sent and settles to its actual cost when it ends, so requests in
flight are always counted at their worst.
"""

from __future__ import annotations

from batchkimi.catalogue import Catalogue
from batchkimi.estimate import worst_case
from batchkimi.pricing import PriceTable
from batchkimi.records import RowRequest, RowResult


class CostBudget:
    def __init__(self, limit: float) -> None:
        if limit < 0:
            msg = "a cost budget cannot be negative"
            raise ValueError(msg)
        self.limit = limit
        self.spent = 0.0
        self.reserved = 0.0

    def try_reserve(self, worst: float) -> bool:
        """Reserve ``worst`` if it fits beside what is spent and reserved."""
        if self.spent + self.reserved + worst > self.limit + 1e-12:
            return False
        self.reserved += worst
        return True

    def settle(self, worst: float, actual: float | None) -> None:
        """Release a reservation; an unknown actual cost counts at its worst case."""
        self.reserved = max(0.0, self.reserved - worst)
        self.spent += worst if actual is None else actual

    def __repr__(self) -> str:
        return (
            f"CostBudget(limit={self.limit:g}, spent={self.spent:.6f}, "
            f"reserved={self.reserved:.6f})"
        )


class CostGate:
    """``--max-cost`` for the scheduler: each request reserves its worst-case cost
    (estimated input, the most output it may be billed for) before it is sent."""

    def __init__(
        self,
        budget: CostBudget,
        prices: PriceTable,
        region: str,
        repairs: int = 0,
        catalogue: Catalogue | None = None,
    ) -> None:
        """``repairs``: how often a structured answer may be asked again, each time
        paid for; the worst case counts them all."""
        self.budget = budget
        self.prices = prices
        self.region = region
        self.repairs = repairs
        self.catalogue = catalogue or Catalogue.packaged()
        self._reserved: dict[int, float] = {}  # request index -> its reservation

    def admit(self, request: RowRequest) -> str | None:
        price = self.prices.get((request.model, self.region))
        if price is None:
            return (
                f"no price is known for {request.model} in {self.region}, so "
                "--max-cost cannot be kept. Give one with --prices FILE"
            )
        worst = price.cost_of(
            worst_case(request, self.catalogue.get(request.model), self.repairs)
        )
        if not self.budget.try_reserve(worst):
            b = self.budget
            return (
                f"the next request may cost up to {worst:.4f} {price.currency}: "
                f"{b.spent:.4f} is spent and {b.reserved:.4f} reserved for requests "
                f"in flight, of a budget of {b.limit:g}"
            )
        self._reserved[request.index] = worst
        return None

    def settle(self, request: RowRequest, result: RowResult | None) -> None:
        worst = self._reserved.pop(request.index, 0.0)
        if result is None:
            actual = None  # cancelled in flight: it may have been billed
        elif result.cost is not None:
            actual = result.cost
        elif result.input_tokens is None:
            actual = 0.0  # the service answered with an error: nothing was billed
        else:
            actual = None  # answered, but no price: count the worst case
        self.budget.settle(worst, actual)
