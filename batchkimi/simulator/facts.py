"""The service's documented facts, transcribed for the simulator from FACTS.md.

Independent of ``batchkimi.catalogue`` on purpose: two transcriptions of one source,
checked against each other by a test, so a slip in either is caught.
"""

from __future__ import annotations

from dataclasses import dataclass

MULTIMODAL = "multimodal-generation"
TEXT = "text-generation"

#: FACTS §7: the Japanese seed (2026-06-30) lists six regions for Kimi, the English
#: one four of them; "treat all six as Kimi regions". Which model is served where
#: changes often and is not transcribed: the simulator serves every model anywhere.
REGIONS = (
    "cn-beijing",
    "ap-southeast-1",
    "ap-northeast-1",
    "cn-hongkong",
    "eu-central-1",
    "us-east-1",
)


@dataclass(frozen=True, slots=True)
class SimModel:
    path: str  # the one native path the gateway serves this model on (FACTS §1.1)
    thinking: str  # hybrid | always | never
    retired: bool = False
    rpm: int = 500  # FACTS §6.1
    tpm: int = 1_000_000
    # FACTS §6.2, where documented (None: not documented, so not enforced)
    max_input: int | None = None
    max_input_thinking: int | None = None
    max_output: int | None = None
    # FACTS §6.5, the seed's feature table: structured output (response_format)
    structured_output: bool = False
    # FACTS §1.3 and the seed's default-parameter table. The seeds state a
    # preserve_thinking default for kimi-k2.7-code only (None: not stated)
    enable_thinking_default: bool | None = None
    preserve_thinking_default: bool | None = None
    temperature: float | None = None
    temperature_thinking: float | None = None
    top_p: float | None = None


MODELS: dict[str, SimModel] = {
    "kimi-k2.7-code": SimModel(
        MULTIMODAL,
        "always",
        enable_thinking_default=True,
        preserve_thinking_default=True,
        temperature_thinking=1.0,
        top_p=0.95,
    ),
    "kimi-k2.6": SimModel(
        MULTIMODAL,
        "hybrid",
        enable_thinking_default=False,
        temperature=0.6,
        temperature_thinking=1.0,
        top_p=0.95,
    ),
    "kimi-k2.5": SimModel(
        MULTIMODAL,
        "hybrid",
        max_input=260_096,
        max_input_thinking=258_048,
        max_output=32_768,
        enable_thinking_default=False,
        temperature=0.6,
        temperature_thinking=1.0,
        top_p=0.95,
    ),
    "kimi-k2-thinking": SimModel(
        TEXT,
        "always",
        retired=True,
        max_input=229_376,
        max_output=16_384,
        structured_output=True,
        temperature_thinking=1.0,
    ),
    "Moonshot-Kimi-K2-Instruct": SimModel(
        TEXT,
        "never",
        retired=True,
        max_input=131_072,
        max_output=8_192,
        temperature=0.6,
        top_p=1.0,
    ),
}


@dataclass(frozen=True, slots=True)
class SimError:
    status: int
    compat_code: str  # the OpenAI-compatible code/type (FACTS §4.4)
    message: str


# FACTS §3.2 (status, DashScope code, compat code) with the documented messages.
ERRORS: dict[str, SimError] = {
    "InvalidParameter": SimError(400, "invalid_parameter_error", "Invalid parameter."),
    "DataInspectionFailed": SimError(
        400,
        "data_inspection_failed",
        "Input or output data may contain inappropriate content.",
    ),
    "Arrearage": SimError(
        400,
        "Arrearage",
        "Access denied, please make sure your account is in good standing.",
    ),
    "InvalidApiKey": SimError(401, "invalid_api_key", "Invalid API-key provided."),
    "AccessDenied": SimError(403, "access_denied", "Access denied."),
    "ModelNotFound": SimError(404, "model_not_found", "Model not exist."),
    "Throttling": SimError(429, "Throttling", "Requests throttled."),
    "Throttling.RateQuota": SimError(
        429, "limit_requests", "Requests rate limit exceeded, please try again later."
    ),
    "Throttling.BurstRate": SimError(
        429,
        "limit_burst_rate",
        "Request rate increased too quickly. To ensure system stability, please "
        "adjust your client logic to scale requests more smoothly over time.",
    ),
    "Throttling.AllocationQuota": SimError(
        429,
        "insufficient_quota",
        "Allocated quota exceeded, please increase your quota limit.",
    ),
    "CommodityNotPurchased": SimError(
        429, "CommodityNotPurchased", "Commodity has not purchased yet."
    ),
    "PrepaidBillOverdue": SimError(
        429, "PrepaidBillOverdue", "The prepaid bill is overdue."
    ),
    "PostpaidBillOverdue": SimError(
        429, "PostpaidBillOverdue", "The postpaid bill is overdue."
    ),
    "InternalError": SimError(
        500, "internal_error", "An internal error has occured, please try again later."
    ),
    "ModelServingError": SimError(
        503,
        "ModelServingError",
        "Too many requests. Your requests are being throttled due to system capacity "
        "limits. Please try again later.",
    ),
    "ServiceUnavailable": SimError(503, "ServiceUnavailable", "Service unavailable."),
}

# FACTS §1.1: the message of a model called on the wrong native path
URL_ERROR = (
    "url error, please check url！For details, see: "
    "https://help.aliyun.com/zh/model-studio/error-code#error-url"
)
