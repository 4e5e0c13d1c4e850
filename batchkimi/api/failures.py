"""From an error answer to what batchkimi does about it (FACTS §3.2, §4.4).

Three kinds: ``transient`` (try again, after backing off on the budget that was hit),
``row`` (this row cannot succeed as asked: record it and go on), ``fatal`` (no row can
succeed until the account is fixed: stop the run). Match on the code first, then on
the HTTP status. Pure: a table and a function.
"""

from __future__ import annotations

from batchkimi.records import Failure

# Account-level refusals: every later request would fail the same way.
_FATAL = {
    "InvalidApiKey",
    "invalid_api_key",
    "NOT AUTHORIZED",
    "AccessDenied",
    "access_denied",
    "AccessDenied.Unpurchased",
    "Model.AccessDenied",
    "App.AccessDenied",
    "Workspace.AccessDenied",
    "AllocationQuota.FreeTierOnly",
    "Arrearage",
    "arrearage",
    # FACTS §3.2: billing problems that arrive as HTTP 429; they are not throttles
    "CommodityNotPurchased",
    "PrepaidBillOverdue",
    "PostpaidBillOverdue",
    "ModelNotFound",
    "model_not_found",
    "model_not_supported",
    "Model.NotExist",
    "WorkSpaceNotFound",
    # the endpoint itself does not exist (a wrong --base-url, --region or --api):
    # every request would fail the same way, and failing each row would mark them
    # all as refused for good
    "NotFound",
}

# Throttles, by the budget they say was exhausted (FACTS §3.2, §3.3).
_THROTTLES = {
    "Throttling.RateQuota": "rpm",
    "limit_requests": "rpm",
    # FACTS §4.4: compat mode's insufficient_quota is a TPM throttle, not billing
    "Throttling.AllocationQuota": "tpm",
    "insufficient_quota": "tpm",
    "Throttling.BurstRate": "burst",
    "limit_burst_rate": "burst",
    "Throttling": "rpm",
}

_TRANSIENT = {
    "InternalError",
    "internal_error",
    "InternalError.Algo",
    "InternalError.Timeout",
    "SystemError",
    "ModelServiceFailed",
    "RequestTimeOut",
    "ModelServingError",
    "ServiceUnavailable",
    "ModelUnavailable",
    "Conflict",
    "GatewayTimeout",
    "InvalidURL.Timeout",
    "BadRequest.InputDownloadFailed",
    # batchkimi's own codes for transport faults (client.py)
    "connection_error",
    "timeout",
    "stream_incomplete",
    "bad_response",
}

_TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504}

# FACTS §3.2/§4.4: compatible mode names the same errors differently. Results and
# summaries use one vocabulary (DashScope's); the wire code stays in the message.
CANONICAL_CODES = {
    "limit_requests": "Throttling.RateQuota",
    "insufficient_quota": "Throttling.AllocationQuota",
    "limit_burst_rate": "Throttling.BurstRate",
    "internal_error": "InternalError",
    "invalid_api_key": "InvalidApiKey",
    "access_denied": "AccessDenied",
    "arrearage": "Arrearage",
    "data_inspection_failed": "DataInspectionFailed",
    "model_not_found": "ModelNotFound",
    "model_not_supported": "ModelNotFound",
    "invalid_parameter_error": "InvalidParameter",
    "invalid_request_error": "InvalidParameter",
}


#: row errors the documentation names (FACTS §3.2); others arrive as they are
_ROW = {"InvalidParameter", "DataInspectionFailed", "InvalidFile", "BadRequest"}


def known_codes() -> frozenset[str]:
    """Every error code this table knows, in results' vocabulary."""
    codes = _FATAL | set(_THROTTLES) | _TRANSIENT | _ROW
    return frozenset(CANONICAL_CODES.get(code, code) for code in codes)


def looks_like_service_code(code: str) -> bool:
    """A code as the service spells them (``DataInspectionFailed``,
    ``InvalidParameter.X``) or ``http_NNN``: codes batchkimi cannot list in full."""
    return code[:1].isupper() or (code.startswith("http_") and code[5:].isdigit())


def _base_code(code: str) -> str:
    return code.split(".")[0] if code.startswith("InternalError") else code


def classify_failure(
    http_status: int | None,
    code: str | None,
    message: str,
    *,
    request_id: str | None = None,
    retry_after_s: float | None = None,
) -> Failure:
    """Decide what an error answer means for the row and the run."""
    code = (code or "").strip()
    text = message.strip()
    canonical = CANONICAL_CODES.get(code, code)
    if canonical != code:
        text = f"[{code}] {text}"

    def make(kind: str, budget: str | None = None) -> Failure:
        return Failure(
            kind=kind,
            code=canonical or f"http_{http_status}",
            message=text,
            http_status=http_status,
            budget=budget,
            request_id=request_id,
            retry_after_s=retry_after_s,
        )

    if code in ("Throttling.AllocationQuota", "insufficient_quota") and (
        "free allocated quota" in text.lower()
    ):
        # FACTS §3.2: "Free allocated quota exceeded" is the free tier running out
        return make("fatal")
    if code in _FATAL:
        return make("fatal")
    if code in _THROTTLES:
        return make("transient", _THROTTLES[code])
    if code in _TRANSIENT or _base_code(code) in _TRANSIENT:
        return make("transient")
    if http_status == 429:
        return make("transient", "rpm")
    if http_status in (401, 403, 404, 405):
        return make("fatal")
    if http_status in _TRANSIENT_STATUS or (http_status or 0) >= 500:
        return make("transient")
    return make("row")
