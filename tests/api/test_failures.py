"""Every code in FACTS §3.2 means what the fact sheet says it means for a batch run."""

from __future__ import annotations

import pytest

from batchkimi.api.failures import classify_failure


@pytest.mark.parametrize(
    ("status", "code", "kind", "budget"),
    [
        (429, "Throttling.RateQuota", "transient", "rpm"),
        (429, "limit_requests", "transient", "rpm"),
        (429, "Throttling.AllocationQuota", "transient", "tpm"),
        (429, "insufficient_quota", "transient", "tpm"),  # a TPM throttle, not billing
        (429, "Throttling.BurstRate", "transient", "burst"),
        (429, "limit_burst_rate", "transient", "burst"),
        (429, "CommodityNotPurchased", "fatal", None),  # billing under 429
        (429, "PrepaidBillOverdue", "fatal", None),
        (429, "PostpaidBillOverdue", "fatal", None),
        (400, "Arrearage", "fatal", None),
        (401, "InvalidApiKey", "fatal", None),
        (403, "AccessDenied", "fatal", None),
        (403, "AllocationQuota.FreeTierOnly", "fatal", None),
        (404, "ModelNotFound", "fatal", None),
        (404, "NotFound", "fatal", None),  # no such endpoint: every row would fail
        (404, None, "fatal", None),
        (405, None, "fatal", None),
        (400, "InvalidParameter", "row", None),
        (400, "DataInspectionFailed", "row", None),
        (400, "data_inspection_failed", "row", None),
        (400, "InvalidURL", "row", None),
        (500, "InternalError", "transient", None),
        (500, "InternalError.Algo", "transient", None),
        (503, "ModelServingError", "transient", None),
        (503, "ModelUnavailable", "transient", None),
        (408, "RequestTimeOut", "transient", None),
        (504, None, "transient", None),
        (429, None, "transient", "rpm"),
        (418, None, "row", None),
    ],
)
def test_codes_map_to_their_documented_handling(
    status: int, code: str | None, kind: str, budget: str | None
) -> None:
    failure = classify_failure(status, code, "message")
    assert (failure.kind, failure.budget) == (kind, budget)


def test_free_quota_exhaustion_stops_the_run_though_it_looks_like_a_throttle() -> None:
    failure = classify_failure(
        429, "Throttling.AllocationQuota", "Free allocated quota exceeded."
    )
    assert failure.kind == "fatal"


def test_compat_codes_are_reported_in_dashscope_vocabulary_with_the_wire_code_kept() -> (
    None
):
    failure = classify_failure(429, "limit_requests", "You have exceeded your limit")
    assert failure.code == "Throttling.RateQuota"
    assert failure.message == "[limit_requests] You have exceeded your limit"
