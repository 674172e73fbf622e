"""The one place that reads the environment: `Settings`, from `SUPERNODE_<SECTION>__<FIELD>` variables.

Every service takes its configuration from here; nothing else calls `os.environ`. Lists accept JSON
(`["a:1","b:2"]`) or comma-separated text (`a:1,b:2`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AddressList = Annotated[list[str], NoDecode]


def _split_list(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class RuntimeSettings(BaseModel):
    """Shared by every service."""

    time_scale: float = Field(
        1.0, gt=0, le=1000, description="Emulated seconds per wall second (0.1 = 10x slower)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of every service"
    )
    bind_host: str = Field(
        "127.0.0.1", description="Interface the gRPC and metrics servers bind (0.0.0.0 in containers)"
    )
    drain_timeout_s: float = Field(
        30.0, gt=0, description="Wall seconds to finish in-flight work after SIGTERM"
    )
    rpc_timeout_s: float = Field(
        30.0, gt=0, description="Wall-second timeout on every unary call between services"
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=4 * 1024 * 1024, description="gRPC send/receive limit"
    )
    stream_stall_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Wall seconds a gRPC server stream's write may wait on a client that stopped "
        "reading (its flow-control window full) before the stream is cut off",
    )


class FabricSettings(BaseModel):
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (HTTP for the frontend)")
    address: str = Field("127.0.0.1:50051", description="Where workers reach the fabric")
    metrics_port: int = Field(9151, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    lease_ttl_s: float = Field(10.0, gt=0, description="Wall seconds a die lease lives without a heartbeat")
    max_inflight_transfers: int = Field(100_000, ge=1, description="Bound on concurrent Transfer calls")


class KvPoolSettings(BaseModel):
    port: int = Field(50052, ge=0, le=65535, description="gRPC port (HTTP for the frontend)")
    address: str = Field("127.0.0.1:50052", description="Where workers reach the KV pool")
    addresses: AddressList = Field(
        default_factory=list,
        description="Pool services workers spread calls over and fail over between (empty = address)",
    )
    metrics_port: int = Field(9152, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="The Redis the pool stores blocks in (cluster: any node, or several comma-separated)",
    )
    redis_mode: Literal["auto", "standalone", "cluster"] = Field(
        "auto", description="Redis topology: auto (asks the server), standalone or cluster"
    )
    failover_wait_s: float = Field(
        5.0,
        ge=0,
        le=120,
        description="Cluster: wall seconds a Get waits for a failing master's replica to take over",
    )
    namespace: str = Field("sn", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Key prefix of this pool")
    block_tokens: int = Field(128, ge=16, le=4096, description="Tokens per KV block (paper: 128-512)")
    payload_ratio: float = Field(
        1 / 1024, gt=0, le=1, description="Stored payload bytes / nominal MLA bytes (1.0 = full size)"
    )
    max_blocks_per_call: int = Field(4096, ge=1, description="Bound on blocks in one Put/Get/Lookup")
    redis_maxmemory: str = Field(
        "512mb", description="LRU memory cap given to each local redis-server (cluster: per node)"
    )
    kept_free_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Freed bytes the pool service keeps for its next large reply (glibc; 0 = defaults)",
    )

    _split = field_validator("addresses", mode="before")(_split_list)


class PrefillSettings(BaseModel):
    port: int = Field(50060, ge=0, le=65535, description="gRPC port (HTTP for the frontend)")
    metrics_port: int = Field(9160, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    worker_id: str = Field("", description="Unique id ('' = prefill-<port>)")
    num_npus: int = Field(16, ge=1, le=384, description="NPUs in the emulated prefill instance (paper: 16)")
    max_queue: int = Field(1024, ge=1, description="Requests waiting for a batch before RESOURCE_EXHAUSTED")
    max_queue_delay_s: float = Field(
        10.0,
        ge=0,
        description="Wall seconds a prompt may be expected to wait for its batch (queued tokens / "
        "throughput); longer is refused at once with RESOURCE_EXHAUSTED (0 = no bound)",
    )
    tokens_per_npu: int = Field(16384, ge=128, description="Batch token budget per NPU (paper: 16,384)")
    ep_size: int = Field(32, ge=1, le=768, description="Dies in the instance's EP group (paper: EP32)")
    precision: Literal["int8", "bf16"] = Field(
        "int8", description="Weights and activations (paper: INT8 W8A8)"
    )
    expert_imbalance: float = Field(
        1.0, ge=1.0, le=10.0, description="Busiest expert slot's load over the mean (1.0 = perfect EPLB)"
    )


class DecodeSettings(BaseModel):
    port: int = Field(50070, ge=0, le=65535, description="gRPC port (HTTP for the frontend)")
    metrics_port: int = Field(9170, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    worker_id: str = Field("", description="Unique id ('' = decode-<port>)")
    num_dies: int = Field(2, ge=1, le=768, description="Data-parallel ranks (dies) this service emulates")
    max_batch_per_die: int = Field(
        48, ge=1, le=1024, description="Sequences per die in one step (paper: 96 per NPU = 48 per die)"
    )
    max_queue: int = Field(1024, ge=1, description="Reserved requests waiting to join the batch")
    reservation_ttl_s: float = Field(
        300.0, gt=0, description="Wall seconds a reservation waits for its Decode"
    )
    ep_size: int = Field(
        320, ge=1, le=768, description="Dies in the emulated instance's EP group (paper: EP320)"
    )
    precision: Literal["int8", "bf16"] = Field(
        "int8", description="Weights and activations (paper: INT8 W8A8)"
    )
    mtp_depth: int = Field(1, ge=0, le=4, description="MTP speculative tokens per step (paper: 1; 0 = off)")
    mtp_accept: float = Field(
        0.7, ge=0, le=1, description="Acceptance of each speculative token (paper: 0.7)"
    )
    tpot_slo_ms: float = Field(0.0, ge=0, description="TPOT SLO bounding the batch per die (0 = none)")
    expert_imbalance: float = Field(
        0.0, ge=0.0, le=10.0, description="Busiest expert slot's load over the mean (0 = the model's default)"
    )


class RouterSettings(BaseModel):
    port: int = Field(50050, ge=0, le=65535, description="gRPC port (HTTP for the frontend)")
    address: str = Field("127.0.0.1:50050", description="Where clients (frontend, SDK) reach the router")
    metrics_port: int = Field(9150, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    prefill_addresses: AddressList = Field(
        default_factory=lambda: ["127.0.0.1:50060"],
        description="Prefill instances (comma-separated host:port)",
    )
    decode_addresses: AddressList = Field(
        default_factory=lambda: ["127.0.0.1:50070"],
        description="Decode instances (comma-separated host:port)",
    )
    max_tokens_limit: int = Field(32768, ge=1, description="Largest max_tokens a request may ask for")
    max_context_tokens: int = Field(
        163840, ge=16, description="Prompt + max_tokens limit (DeepSeek-R1 max_position_embeddings)"
    )
    max_inflight: int = Field(4096, ge=1, description="Requests in flight before RESOURCE_EXHAUSTED")
    load_poll_s: float = Field(0.5, gt=0, description="Wall seconds between load probes of the workers")
    policy: Literal["paper", "round_robin", "kv_aware"] = Field(
        "paper",
        description="Prefill choice: paper (least loaded), round_robin, kv_aware (last server of the prefix)",
    )
    reserve_wait_s: float = Field(
        30.0,
        ge=0,
        description="Wall seconds a request waits for decode KV capacity before RESOURCE_EXHAUSTED",
    )
    max_affinity_entries: int = Field(
        100_000, ge=1, description="Prefixes the kv_aware policy remembers (LRU)"
    )
    auth_token: str = Field(
        "",
        description="Bearer token required on the router's gRPC API, health excepted ('' = open); "
        "the frontend and SDK send it",
    )
    long_context: Literal["reject", "truncate", "xl3m"] = Field(
        "reject",
        description="Prompts over the window: reject (error), truncate (keep the last window), xl3m",
    )
    admission_max_inflight: int = Field(
        1024,
        ge=1,
        description="Generate and GenerateUpload streams admitted at once; beyond them RESOURCE_EXHAUSTED",
    )
    admission_max_per_connection: int = Field(
        0,
        ge=0,
        description="Generate and GenerateUpload streams per client connection (0 = only the total bound)",
    )
    admission_max_wait_s: float = Field(
        1.0,
        ge=0,
        description="Wall seconds a stream may wait for admission; longer (or expected longer) is refused",
    )
    max_queue_delay_s: float = Field(
        0.0,
        ge=0,
        description="Wall seconds a stream may be expected to wait for its first token behind the streams "
        "still waiting for theirs (their number x the recent interval between first tokens); longer is "
        "refused at once with RESOURCE_EXHAUSTED (0 = no bound)",
    )

    max_migrations: int = Field(
        2, ge=0, le=16, description="Times a request may move to another decode instance after a failure"
    )
    liveness_s: float = Field(
        5.0,
        gt=0,
        description="Wall seconds a decode stream may go without a chunk before it is treated as failed",
    )
    call_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Wall-second deadline on the router's short calls (reserve, cancel, fabric fault polls)",
    )
    prefill_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Emulated seconds one prefill call (and a decode stream's first chunk) may take, "
        "when the request's own deadline is later",
    )
    score_timeout_s: float = Field(
        600.0, gt=0, description="Emulated seconds one XL3M scoring call may take (it waits behind prefill)"
    )
    fault_poll_s: float = Field(
        0.5, ge=0, description="Wall seconds between asks of the fabric for active faults (0 = never)"
    )

    _split = field_validator("prefill_addresses", "decode_addresses", mode="before")(_split_list)


class Xl3mSettings(BaseModel):
    """Over-long prompts: the router's long-context policy and XL3M's knobs (arXiv:2405.17755).

    The paper's abstract gives the method, not these values; every default is an ASSUMPTION whose
    reason is in its description (reference xl3m-pangu.md A.3 lists what is unconfirmed).
    """

    question_tokens: int = Field(
        12,
        ge=1,
        le=4096,
        description="Nq: prompt tail scored with every segment. ASSUMPTION: the paper says 'a few tokens'; "
        "a one-sentence question is about 10 DeepSeek tokens (use ~40 with the byte tokenizer): a "
        "longer tail scores the filler before the question, not the question",
    )
    segment_tokens: int = Field(
        0,
        ge=0,
        description="S: tokens per segment (0 = auto: (window - Nq - max_tokens) / K, so the K kept "
        "segments and the question fill the window). ASSUMPTION: unconfirmed in the paper",
    )
    overlap_tokens: int = Field(
        -1,
        ge=-1,
        description="O: tokens shared by neighbouring segments (-1 = auto: S/8). ASSUMPTION: a summary "
        "says windows overlap so a sentence is not cut; no size is given",
    )
    kept_segments: int = Field(
        4,
        ge=1,
        le=1024,
        description="K: segments kept. ASSUMPTION: unconfirmed; 4 leaves room for a few relevant passages",
    )
    score_fn: Literal["mean_entropy", "last_entropy", "question_nll"] = Field(
        "mean_entropy",
        description="Segment score, lower = kept. ASSUMPTION: summaries say 'entropy of the local "
        "distribution'; the mean over the question positions is our reading",
    )
    scoring_priority: Literal["low", "normal"] = Field(
        "low",
        description="Scoring jobs in prefill batches: low = only the budget interactive prefill leaves; "
        "normal = FIFO with it. ASSUMPTION: interactive TTFT matters more than a long batch job",
    )
    max_inflight_segments: int = Field(
        64, ge=1, le=4096, description="Scoring jobs one request has in flight (bounds router memory)"
    )
    max_prompt_tokens: int = Field(
        32 * 1024 * 1024, ge=1, description="Largest prompt an upload may carry (tokens)"
    )
    max_upload_chunk_tokens: int = Field(
        1024 * 1024, ge=1, description="Largest chunk of an upload (tokens per message)"
    )


class FrontendSettings(BaseModel):
    port: int = Field(8000, ge=0, le=65535, description="HTTP port of the OpenAI-compatible API")
    model_name: str = Field("deepseek-r1", description="Model id served under /v1/models")
    api_keys: AddressList = Field(
        default_factory=list, description="Accepted bearer tokens (empty = no auth)"
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body accepted")
    max_n: int = Field(8, ge=1, le=128, description="Largest n (choices per request) accepted")
    max_inflight: int = Field(
        512, ge=1, description="Generation requests served at once; beyond them 429 with Retry-After"
    )
    max_inflight_per_client: int = Field(
        256, ge=0, description="Generation requests per client address (0 = only the total bound)"
    )
    max_queue_wait_s: float = Field(
        1.0,
        ge=0,
        description="Wall seconds a request may wait for a slot; longer (or expected longer) gets 429",
    )
    max_queue_delay_s: float = Field(
        0.0,
        ge=0,
        description="Wall seconds a request may be expected to wait for its first token (from its arrival "
        "here to the router's first chunk, this process's event-loop lag included); longer gets 429 at "
        "once, before its body is read (0 = no bound)",
    )
    stream_stall_timeout_s: float = Field(
        10.0, gt=0, description="Wall seconds a streaming client may stop reading before it is cut off"
    )
    send_buffer_bytes: int = Field(
        64 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Kernel send buffer per HTTP connection: with the 64 KiB write buffer, what a "
        "client that stops reading is sent before its stall is timed",
    )

    _split = field_validator("api_keys", mode="before")(_split_list)


class TokensSettings(BaseModel):
    """How text becomes tokens and how long the token model writes."""

    tokenizer: Literal["deepseek", "byte"] = Field(
        "deepseek", description="Tokenizer: deepseek (DeepSeek's BPE vocabulary) or byte (UTF-8 bytes)"
    )
    output_len: str = Field(
        "lognormal:256:1.0",
        description="Natural output length before end-of-sequence (lognormal:MEDIAN:SIGMA, "
        "uniform:LOW:HIGH, geometric:MEAN, fixed:N)",
    )

    @field_validator("output_len")
    @classmethod
    def _check_output_len(cls, value: str) -> str:
        from supernode.core.tokens import OutputLengths

        OutputLengths.parse(value)
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUPERNODE_", env_nested_delimiter="__", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    fabric: FabricSettings = Field(default_factory=FabricSettings)
    kvpool: KvPoolSettings = Field(default_factory=KvPoolSettings)
    prefill: PrefillSettings = Field(default_factory=PrefillSettings)
    decode: DecodeSettings = Field(default_factory=DecodeSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    xl3m: Xl3mSettings = Field(default_factory=Xl3mSettings)
    frontend: FrontendSettings = Field(default_factory=FrontendSettings)
    tokens: TokensSettings = Field(default_factory=TokensSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()


def settings_rows(settings: Settings) -> list[tuple[str, str, str]]:
    """(environment variable, value, description) for every setting, in declaration order."""
    rows = []
    for section in Settings.model_fields:
        model = getattr(settings, section)
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            text = ",".join(value) if isinstance(value, list) else str(value)
            rows.append((f"SUPERNODE_{section.upper()}__{name.upper()}", text, info.description or ""))
    return rows


def known_env_vars() -> set[str]:
    """Every `SUPERNODE_*` variable the settings understand (for compose and docs checks)."""
    return {var for var, _, _ in settings_rows(Settings.model_construct())}
