"""Typed load-test report: every section of report.json as a pydantic model.

The models serialize to exactly the report.json shape the earlier untyped code wrote: a key is
written when it was set (by the code that measured it, or by the JSON a report was read from),
so an optional section ("interrupted", "slo", "note", ...) is absent rather than null, as before.
Unknown keys are kept, so reports written by older or newer versions round-trip unchanged and
`tritonforge loadtest compare` reads them. Latency statistics follow genai-perf's typed metrics
(count, avg, min, max, percentiles, std per metric).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Number = int | float  # medians of integer counts across repeats may be fractional


class ReportModel(BaseModel):
    """Base: keeps unknown keys; `to_dict` writes only the keys that were set."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python", exclude_unset=True, by_alias=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls.model_validate(data)


class Stats(ReportModel):
    """One metric's distribution (genai-perf style); only `count` when nothing was measured."""

    count: Number = 0
    avg: Number | None = None
    min: Number | None = None
    max: Number | None = None
    p50: Number | None = None
    p90: Number | None = None
    p99: Number | None = None
    std: Number | None = None


class ErrorMessage(ReportModel):
    type: str
    message: str
    count: Number


class ErrorSummary(ReportModel):
    count: Number = 0
    by_type: dict[str, Number] = Field(default_factory=dict)
    top_messages: list[ErrorMessage] = Field(default_factory=list)


class TokenCheck(ReportModel):
    """Server-reported output token counts against re-tokenised text."""

    compared: Number = 0
    server_total: Number | None = None
    retokenized_total: Number | None = None
    requests_differing: Number | None = None
    relative_difference: float | None = None


class PromptReuse(ReportModel):
    """Prompts sent more than once, as the client counts them and as the server's KV cache saw them."""

    requests: Number = 0
    distinct_prompts: Number = 0
    repeated_requests: Number = 0  # requests whose exact prompt was sent before (warm-up included)
    kv_reused_blocks: Number | None = None  # KV-cache blocks served from the prefix cache during the run
    kv_metric: str | None = None  # the Triton metric the blocks were read from


class LevelMetrics(ReportModel):
    """All metrics of one run (or the per-field medians of repeated runs)."""

    requests: Number = 0
    completed: Number = 0
    failed: Number = 0
    interrupted: Number | None = None
    duration_s: Number | None = None
    error_rate: Number | None = None
    output_tokens: Number | None = None
    input_tokens: Number | None = None
    output_tokens_per_s: Number | None = None
    requests_per_s: Number | None = None
    goodput_requests_per_s: Number | None = None
    goodput_fraction: Number | None = None
    ttft_ms: Stats | None = None
    itl_ms: Stats | None = None
    e2e_ms: Stats | None = None
    output_tokens_per_request: Stats | None = None
    input_tokens_per_request: Stats | None = None
    output_tokens_per_s_per_user: Stats | None = None
    errors: ErrorSummary | None = None
    cache_status: dict[str, Number] | None = None
    tiers: dict[str, Number] | None = None
    kinds: dict[str, Number] | None = None
    slo: dict[str, Number] | None = None
    send_lag_ms: Stats | None = None
    sent_per_s: Number | None = None
    token_check: TokenCheck | None = None
    prompt_reuse: PromptReuse | None = None
    wall_s: Number | None = None
    repeats: int | None = None


class CustomMetric(ReportModel):
    kind: str
    delta: Number
    after: Number


class ModelServerStats(ReportModel):
    requests: Number
    exec_count: Number
    avg_queue_us: Number | None = None
    avg_compute_infer_us: Number | None = None
    avg_request_us: Number | None = None


class ServerMetrics(ReportModel):
    """Triton /metrics over one run; a level with repeats holds one per run under `runs`."""

    available: bool | None = None
    model: str | None = None
    triton: dict[str, Number | None] | None = None
    models: dict[str, ModelServerStats] | None = None
    tritonforge: dict[str, CustomMetric] | None = None
    runs: list[ServerMetrics] | None = None


class ProcessStats(ReportModel):
    process: str | None = None
    cpu_percent_mean: Number | None = None
    cpu_percent_max: Number | None = None
    loop_lag_ms_p99: Number | None = None
    loop_lag_ms_max: Number | None = None
    requests_started: Number | None = None
    open_loop_skipped: Number | None = None
    unfinished_at_stop: Number | None = None


class GeneratorRun(ReportModel):
    processes: list[ProcessStats] = Field(default_factory=list)
    saturated: bool = False
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class LoadGenerator(ReportModel):
    saturated: bool = False
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    runs: list[GeneratorRun] = Field(default_factory=list)


class Cost(ReportModel):
    gpu: str | None = None
    gpu_count: Number | None = None
    note: str | None = None
    price_per_gpu_hour: Number | None = None
    price_source: str | None = None
    dollars_per_hour: Number | None = None
    cost_per_1m_output_tokens: Number | None = None
    output_tokens_per_dollar: Number | None = None


class Roofline(ReportModel):
    note: str | None = None
    gpu: str | None = None
    tier: str | None = None
    batch: Number | None = None
    input_len: Number | None = None
    output_len: Number | None = None
    roofline_decode_tokens_per_s: Number | None = None
    decode_bound: str | None = None
    source: str | None = None
    fraction_of_roofline: Number | None = None


class PredictedMetric(ReportModel):
    """One metric at one level: the prediction, the measurement (`measured_stat`), measured/predicted,
    and the measured performance as a fraction of the predicted (latencies inverted)."""

    metric: str
    predicted: Number
    measured: Number | None = None
    measured_stat: str | None = None
    ratio: Number | None = None
    of_prediction: Number | None = None
    better: str | None = None


class LevelPrediction(ReportModel):
    """The prediction for one level (planner or CPU system) joined with the measurement."""

    source: str | None = None
    system: str | None = None
    workload: dict[str, Any] | None = None
    predicted: dict[str, Any] | None = None  # the predictor's full output
    rows: list[PredictedMetric] = Field(default_factory=list)
    cpu_share: Number | None = None  # share of a core one thread got just before the level (CPU tiers)
    note: str | None = None


class PredictionCheck(ReportModel):
    """`--min-of-prediction`: the metrics measured below that fraction of their prediction."""

    min_of_prediction: Number
    checked: Number = 0
    failed: bool = False
    failures: list[str] = Field(default_factory=list)


class LevelReport(ReportModel):
    label: str
    mode: str | None = None
    value: Number | None = None
    metrics: LevelMetrics = Field(default_factory=LevelMetrics)
    runs: list[LevelMetrics] | None = None
    server_metrics: ServerMetrics | None = None
    load_generator: LoadGenerator | None = None
    cost: Cost | None = None
    roofline: Roofline | None = None
    prediction: LevelPrediction | None = None


class WorkloadSummary(ReportModel):
    spec: dict[str, Any] | None = None
    items: Number | None = None
    kinds: dict[str, Number] | None = None
    input_tokens_mean: Number | None = None
    input_tokens_min: Number | None = None
    input_tokens_max: Number | None = None
    output_tokens_mean: Number | None = None
    distinct_prompts: Number | None = None
    warmup_items: Number | None = None


class Summary(ReportModel):
    best_level: str | None = None
    output_tokens_per_s: Number | None = None
    requests_per_s: Number | None = None
    cost_per_1m_output_tokens: Number | None = None
    requests: Number = 0
    failed: Number = 0
    load_generator_saturated: bool = False
    prompt_reuse: PromptReuse | None = None


class ComparisonRow(ReportModel):
    level: str
    metric: str
    baseline: Number
    current: Number
    ratio: Number | None = None
    better: str | None = None
    tolerance: str | None = None
    samples: Number | None = None
    verdict: str


class Comparison(ReportModel):
    baseline: str | None = None
    tolerances: list[str] | None = None
    regression: bool = False
    regressions: Number = 0
    compared: Number = 0
    missing_levels: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    rows: list[ComparisonRow] = Field(default_factory=list)


class Report(ReportModel):
    """report.json (schema `tritonforge.loadtest/1`)."""

    schema_: str | None = Field(default=None, alias="schema")
    created: str | None = None
    metric_definitions: str | None = None
    config: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    workload: WorkloadSummary | None = None
    levels: list[LevelReport] = Field(default_factory=list)
    summary: Summary | None = None
    token_check: TokenCheck | None = None
    errors: ErrorSummary | None = None
    notes: list[str] = Field(default_factory=list)
    comparison: Comparison | None = None
    prediction_check: PredictionCheck | None = None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str) + "\n"


def as_dict(report: ReportModel | dict[str, Any]) -> dict[str, Any]:
    """A report (or any section) as plain JSON-ready data, whether typed or already a dict."""
    return report.to_dict() if isinstance(report, ReportModel) else report
