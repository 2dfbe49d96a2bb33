"""Control-plane settings: pydantic-settings, prefix ``INFERPLEX_``, built in the lifespan."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kserve.http_connections import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES
from kserve.jsonbody import MAX_JSON_VALUES
from kserve.restricted import DEFAULT_KEY, InstanceCredential, check_key, check_value
from placement.cluster import DEFAULT_EVICT_MARGIN


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERPLEX_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Where the embedded store and the artifact store live.")
    store_url: str | None = Field(
        None,
        description="State store: None/'embedded' for a file under data_dir, or 'etcd://host:port[,host:port]'.",
    )
    artifact_dir: Path | None = Field(
        None,
        description="Content-addressed model bytes; defaults to data_dir/artifacts. Replicas on several "
        "nodes must share it (NFS/shared volume) until an S3-compatible store exists.",
    )
    host: str = Field("127.0.0.1", description="Bind address of REST + v2 HTTP gateway.")
    http_port: int = Field(8000, description="Port of REST API and the v2 HTTP gateway.")
    grpc_port: int = Field(8001, description="Port of the v2 gRPC gateway.")
    replica_id: str = Field("cp-0", description="Name of this control-plane replica (logs, leader key).")
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest model file a tenant may upload.")
    max_request_bytes: int = Field(64 * 1024 * 1024, description="Largest inference request body (HTTP and gRPC).")
    max_rest_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest body of any other REST request (tenants, keys, instances, "
        "registration, ...): 413 past it, by the declared Content-Length before the body is read, else "
        "while a chunked body is read. Uploads are bounded by max_upload_bytes, v2 infer by max_request_bytes.")
    max_json_values: int = Field(
        MAX_JSON_VALUES, gt=0, description="Most values (array elements, object keys and values) the JSON "
        "part of a v2 HTTP inference request may hold: 413 past it, counted before it is parsed. Parsed "
        "JSON takes up to ~30 times its text, but at most ~150 bytes per value; binary tensor data is "
        "not counted. 'inferplex up' gives its workers the same bound.")
    header_timeout_s: float = Field(
        DEFAULT_HEADER_TIMEOUT_S, gt=0, description="Seconds an HTTP connection has to send its whole "
        "request headers, after connecting or starting its next request; then it gets 408 and is closed.")
    max_header_bytes: int = Field(
        DEFAULT_MAX_HEADER_BYTES, gt=0, description="Largest HTTP request headers accepted (431 past it).")
    bootstrap_admin_key: str | None = Field(
        None, description="If set and no admin key exists yet, this key becomes the first admin key."
    )
    admin_key_file: Path | None = Field(
        None, description="Where a generated first admin key is written (mode 0600); default data_dir/admin.key."
    )
    instance_lease_ttl_s: int = Field(10, description="TTL of an instance's registration lease.")
    leader_lease_ttl_s: int = Field(5, description="TTL of the placement leader's lease.")
    request_timeout_s: float = Field(30.0, description="Upper bound on one inference through the gateway.")
    predictor_window: int = Field(
        50, ge=1, description="Most recent observations per (model, instance class, batch) the predictor keeps."
    )
    predictor_percentile: float = Field(
        99.0, ge=0, le=100, description="Percentile the predictor answers by default (admission uses it)."
    )
    stats_poll_interval_s: float = Field(
        0.5, ge=0, description="Least time between two reads of an instance's statistics for one model. "
        "inferplex workers report each execution's compute time in the response (parameter "
        "inferplex_compute_ns), which feeds the predictor directly; statistics reads serve only instances "
        "without it (NVIDIA Triton) and requests whose batch size the gateway cannot see. 0 reads after "
        "every such execution; above 0, a read that covers several executions feeds their mean.",
    )
    profile_on_upload: bool = Field(True, description="Profile each new model version on an instance after upload.")
    placement_policy: Literal["cost", "lru", "static"] = Field(
        "cost", description="Which models stay loaded. cost: evict the copies cheapest to lose "
        "(request rate x reload time per byte), never busy ones, honour tenants' memory shares, "
        "prefetch rising models and replicate hot ones. lru and static are baselines kept for "
        "benchmarks: lru evicts the least recently used copy, static loads what fits and never evicts.")
    placement_evict_margin: float | None = Field(
        DEFAULT_EVICT_MARGIN, ge=1.0, description="Under the cost policy, optional loads (prefetch, replicas, and a cold "
        "load no waiting request can use within its SLO) evict only copies this many times cheaper "
        "(request rate x reload time per byte) than the newcomer; unset (null): they take only free "
        "memory. Higher keeps the resident set steadier under memory pressure, at the price of "
        "refusing more cold models; try a value first with `inferplex sim --evict-margin`.")
    scheduler: bool = Field(
        True, description="Admission, deadline-ordered queues and cross-request batching in the "
        "control plane (admission/). false: forward each request as it comes (pass-through, kept to "
        "compare against in benchmarks).")
    scheduler_slots_per_instance: int = Field(
        1, ge=1, le=16, description="Executions the scheduler keeps in flight per instance: the "
        "control plane, not the instance, decides the order of everything else.")
    profile_exec_timeout_s: float = Field(
        5.0, gt=0, description="Longest one profiling execution may run before the instance stops it. "
        "Profiling first runs each upload once with large integer inputs under this bound; a model "
        "stopped there (it runs as long as its inputs say, e.g. a Loop with an input trip count) "
        "is refused (status failed).")
    instance_restricted_key: str = Field(
        DEFAULT_KEY, description="Header key of the credential the control plane sends to every instance: "
        "'<key>' over HTTP, 'triton-grpc-protocol-<key>' over gRPC, as Triton's --http-restricted-api and "
        "--grpc-restricted-protocol expect. Letters, digits, '-', '_', '.'; the same on every replica.",
    )
    instance_restricted_value: SecretStr | None = Field(
        None, description="Value of that header: the secret that instances (Triton started with "
        "--http-restricted-api=<groups>:<key>=<value> and --grpc-restricted-protocol likewise, or "
        "inferplex workers) demand on every API but health. The same on every replica; self-registering "
        "workers receive it in the registration answer, which is refused while it is unset. Unset: "
        "instances are called without it. 'inferplex up' keeps one in data_dir/instance.key.",
    )

    @field_validator("placement_evict_margin", mode="before")
    @classmethod
    def _margin(cls, value: object) -> object:
        # the environment writes "no margin" as null or none
        return None if isinstance(value, str) and value.strip().lower() in ("null", "none") else value

    @field_validator("instance_restricted_key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_key(value)

    @field_validator("instance_restricted_value")
    @classmethod
    def _value(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        check_value(value.get_secret_value())
        return value

    @property
    def instance_credential(self) -> InstanceCredential | None:
        if self.instance_restricted_value is None:
            return None
        return InstanceCredential(self.instance_restricted_key, self.instance_restricted_value.get_secret_value())

    @property
    def artifacts_path(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    @property
    def admin_key_path(self) -> Path:
        return self.admin_key_file or self.data_dir / "admin.key"
