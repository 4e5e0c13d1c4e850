"""The errors batchkimi raises, and the exit code each one means.

Rows that fail are data (a ``RowResult`` with ``status="error"``), never exceptions.
Exceptions are for unwinding a whole run, or, internally, for driving retries::

    BatchkimiError                 every error the CLI prints without a traceback
    ├── ConfigError       exit 2   bad option, job spec, region/workspace, missing key
    ├── ManifestError     exit 2   unreadable manifest, mapped column absent
    ├── OutputLockedError exit 4   another run holds the output folder
    ├── FatalApiError     exit 5   the service refused the whole account
    ├── JournalError      exit 3   the journal cannot be written (store.journal)
    └── OutputWriteError  exit 3   results.parquet cannot be written (store.results)
    TransientError                 internal only: one attempt failed, try again

A stop by a limit or a signal is not an error: the run returns normally, exit 3.

No message ever contains the API key: errors carry URLs and codes, never headers.
"""

from __future__ import annotations


class BatchkimiError(Exception):
    """Base of every error the CLI renders as ``Error: <message>`` with an exit code."""

    exit_code = 1


class ConfigError(BatchkimiError):
    """The job cannot start as configured; nothing was sent."""

    exit_code = 2


class ManifestError(BatchkimiError):
    """The manifest cannot be read or does not have what the job needs."""

    exit_code = 2

    def __init__(
        self,
        problem: str,
        *,
        path: str,
        fix: str,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = path
        self.fix = fix
        self.row = row
        self.column = column
        where = f"{path}"
        if row is not None:
            where += f", row {row:,}"
        if column is not None:
            where += f', column "{column}"'
        super().__init__(f"{where}: {problem}. {fix}")


class OutputLockedError(BatchkimiError):
    """Another batchkimi run is writing to the same output folder."""

    exit_code = 4


class FatalApiError(BatchkimiError):
    """The service refused the account, or the endpoint does not exist; no row can
    succeed until that is fixed."""

    exit_code = 5

    def __init__(self, code: str, message: str, *, http_status: int | None) -> None:
        self.code = code
        self.service_message = message
        self.http_status = http_status
        whom = (
            "for this endpoint"
            if code in ("NotFound", "http_404", "http_405")
            else "for the whole account"
        )
        super().__init__(
            f"the service stopped the run {whom}: {code} "
            f"(HTTP {http_status}): {message.rstrip('.')}. "
            f"{_ACCOUNT_FIXES.get(code, _DEFAULT_FIX)} "
            "Every answer already received is kept; re-run the same command to resume."
        )


_DEFAULT_FIX = "Fix the account or key in the Model Studio console."
_ACCOUNT_FIXES = {
    "InvalidApiKey": (
        "Check DASHSCOPE_API_KEY: keys belong to one region, so the key must match "
        "--region (or the workspace)."
    ),
    "NOT AUTHORIZED": "Authorise the workspace for this key in the console.",
    "Arrearage": "The account is overdue: top it up in the Alibaba Cloud console.",
    "CommodityNotPurchased": "Activate Model Studio (or the model) for this account.",
    "PrepaidBillOverdue": "Pay the overdue prepaid bill in the Alibaba Cloud console.",
    "PostpaidBillOverdue": "Pay the overdue bill in the Alibaba Cloud console.",
    "NotFound": (
        "There is no such endpoint: check --base-url, --region, --workspace-id and "
        "--api (without --base-url they are built for you)."
    ),
    "http_404": (
        "There is no such endpoint: check --base-url, --region, --workspace-id and "
        "--api (without --base-url they are built for you)."
    ),
    "http_405": "The endpoint does not take this request: check --base-url and --api.",
    "AllocationQuota.FreeTierOnly": (
        "The free quota is used up and 'free tier only' is on: turn it off in the "
        "console to pay for further use."
    ),
}


class TransientError(Exception):
    """One attempt failed in a way that a later attempt may not (drives retries)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None,
        budget: str | None = None,
        retry_after_s: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        self.budget = budget
        self.retry_after_s = retry_after_s
        self.request_id = request_id
        super().__init__(f"{code} (HTTP {http_status}): {message}")
