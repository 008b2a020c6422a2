"""The settings of `wva-adapter run`: one typed model, from flags and environment alike.

Every `run` flag is a field of `RunSettings`, and every field can also come from an
environment variable: `WVA_` + the field's name in upper case (`--grpc-port` ->
`grpc_port` -> `WVA_GRPC_PORT`; `--leader-election` -> `WVA_LEADER_ELECTION=true`).
`RunSettings.load(flags, environ)` takes, for each field, the flag given on the command
line, else its variable, else the field's default.

Variables are read by pydantic-settings' environment source, with the names exactly as
written (upper case); values are converted like the field's type: numbers, on/off
(true/false, 1/0, yes/no, on/off), one of the choices; the list settings (`namespace`,
`scrape`) take items separated by commas or spaces. An empty variable counts as unset.
Other `WVA_*` variables are ignored: Kubernetes sets `WVA_ADAPTER_SERVICE_HOST` and
the like in every pod of a namespace with a Service called `wva-adapter`.

A value that cannot be used is a SettingsError naming its flag or its variable. A
broken variable is reported even when its flag is also given: a broken environment is
never ignored silently.

The command line itself is argparse (adapter/cli.py: building it, for `--help`, loads no
pydantic); tests/test_settings.py keeps its flags and these fields one to one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, PrivateAttr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from adapter.defaults import DEFAULT_CONFIG_NAMESPACE, DEFAULT_RETENTION_S, ENV_PREFIX
from adapter.model.system import SaturationPolicy

__all__ = ["RunSettings", "SettingsError", "env_variable", "flag_of"]

_LIST_SEPARATORS = re.compile(r"[,\s]+")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names its flag or its variable."""


def env_variable(field: str) -> str:
    """The environment variable of a `RunSettings` field: `grpc_port` -> `WVA_GRPC_PORT`."""
    return ENV_PREFIX + field.upper()


def flag_of(field: str) -> str:
    """The command-line flag of a `RunSettings` field: `grpc_port` -> `--grpc-port`."""
    return "--" + field.replace("_", "-")


def _require(accepts: Callable[[float], bool], message: str) -> AfterValidator:
    def check(value: float) -> float:
        if not accepts(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


PositiveSeconds = Annotated[
    float,
    _require(lambda v: math.isfinite(v) and v > 0, "must be a finite number of seconds > 0"),
]
NonNegativeSeconds = Annotated[
    float,
    _require(lambda v: math.isfinite(v) and v >= 0, "must be a finite number of seconds >= 0"),
]
Port = Annotated[
    int, _require(lambda v: 0 <= v <= 65535, "must be a port number 0..65535 (0: any free port)")
]
AtLeastOne = Annotated[int, _require(lambda v: v >= 1, "must be >= 1")]
Replicas = Annotated[int, _require(lambda v: v >= 0, "must be >= 0 (0 allows scale to zero)")]
Share = Annotated[float, _require(lambda v: 0 < v < 100, "must be a percentage in (0, 100)")]
Percent = Annotated[
    float, _require(lambda v: math.isfinite(v) and v >= 0, "must be a finite percentage >= 0")
]
# items separated by commas or spaces in a variable (`_split`; NoDecode: not JSON), a list
# on the command line; None: not set
Items = Annotated[tuple[str, ...] | None, NoDecode]


class RunSettings(BaseSettings):
    """What `wva-adapter run` does; `load` builds it from flags and `WVA_*` variables.

    `RunSettings(**values)` takes only the values given (and the defaults): the
    environment is read by `load` alone, so a test builds the settings it means.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid"
    )

    # cluster (one of): a folder of YAML, or Kubernetes
    local: str | None = None
    kubeconfig: str | None = None  # default: in-cluster config, then ~/.kube/config
    namespace: Items = None  # watch VAs in these namespaces (default: all)
    config_namespace: str = DEFAULT_CONFIG_NAMESPACE
    # metrics (one of): scraped pods, a targets file, or Prometheus
    scrape: Items = None  # [NAMESPACE=]URL
    scrape_file: str | None = None
    scrape_window: NonNegativeSeconds = 0.0
    prometheus: str | None = None
    window: str = "1m"
    prometheus_ca_file: str | None = None
    prometheus_token_file: str | None = None
    prometheus_insecure_skip_verify: bool = False
    # the inference gateway (llm-d router / EPP), whose queue wakes variants at zero:
    # its /metrics endpoints ([NAMESPACE=]URL), or its series on the --prometheus server
    gateway: Items = None
    gateway_token_file: str | None = None  # a bearer token for the --gateway endpoints
    gateway_prometheus: bool = False
    # the cycle
    interval: PositiveSeconds = 15.0
    cycles: AtLeastOne | None = None  # None: never stop
    staleness: PositiveSeconds | None = None  # None: 3 x interval (`staleness_s`)
    min_replicas: Replicas = 1
    # with --min-replicas 0: how long a variant sees no traffic before it goes to zero,
    # and how often the gateway is polled for requests waiting for a variant at zero
    scale_to_zero_after: NonNegativeSeconds = DEFAULT_RETENTION_S
    wake_poll: PositiveSeconds = 0.25
    unlimited: bool = False
    saturation_policy: SaturationPolicy = "None"
    # size each variant for this % of requests within both SLOs (a class's
    # `slo-attainment` overrides it); `mean` sizing is the reference's rule
    slo_attainment: Share = 99.0
    sizing: Literal["attainment", "mean"] = "attainment"
    # size for the measured arrival rate plus this % of it: capacity bought ahead of a
    # sudden rise, which a reactive loop serves only a start-up later (bench/arena.py)
    headroom: Percent = 0.0
    # learn each VA's decode profile from its pods; off: the declared ones always size
    no_profile_learning: bool = False
    # size for the load forecast a learned start-up ahead, not the load now
    look_ahead: bool = False
    sync_timeout: PositiveSeconds = 60.0
    # serving
    grpc_host: str = "0.0.0.0"
    grpc_port: Port = 9090
    grpc_reflection: bool = False
    grpc_tls_cert_file: str | None = None
    grpc_tls_key_file: str | None = None
    grpc_tls_client_ca_file: str | None = None
    grace_period: NonNegativeSeconds = 5.0
    grpc_workers: AtLeastOne | None = None  # None: adapter.scaler.pool.default_workers()
    metrics_host: str = "0.0.0.0"
    metrics_port: Port = 8080
    # VariantAutoscaling status
    no_status: bool = False
    leader_election: bool = False
    leader_election_namespace: str = DEFAULT_CONFIG_NAMESPACE
    leader_election_id: str = "wva-adapter-leader"
    pod_name: str | None = None
    verbose: bool = False

    # the fields whose value came from a variable (`given_as`)
    _from_environment: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("namespace", "scrape", "gateway", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item for item in _LIST_SEPARATORS.split(value.strip()) if item)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The values given only: `load` reads the environment it is handed, not os.environ."""
        del settings_cls, env_settings, dotenv_settings, file_secret_settings
        return (init_settings,)

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str]) -> RunSettings:
        """The flags given on the command line, else the `WVA_*` variables, else defaults.

        `flags` holds only the flags given, by field name. Raises SettingsError naming
        the variable, or the flag, whose value cannot be used; variables first, each
        checked even when its flag is also given.
        """
        variables = _Environment(cls, environ)()
        _validated(cls, variables, flags={}, variables=variables)
        settings = _validated(cls, {**variables, **flags}, flags=flags, variables=variables)
        settings._from_environment = frozenset(variables.keys() - flags.keys())
        return settings

    @property
    def staleness_s(self) -> float:
        """Seconds after which a snapshot is not served: `staleness`, or 3 intervals."""
        return self.staleness if self.staleness is not None else 3 * self.interval

    def given_as(self, field: str) -> str:
        """How the user set `field`: its variable if it came from the environment, else its
        flag (for messages about a combination of settings)."""
        return env_variable(field) if field in self._from_environment else flag_of(field)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (not os.environ), with
    the variables' names matched exactly: `WVA_GRPC_PORT`, never `wva_grpc_port`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls, case_sensitive=False)
        # case-insensitive lookup of names that were written in upper case; blank is unset
        self.env_vars = {
            name.lower(): value
            for name, value in environ.items()
            if name.startswith(ENV_PREFIX) and value.strip()
        }


def _validated(
    cls: type[RunSettings],
    values: Mapping[str, Any],
    *,
    flags: Mapping[str, Any],
    variables: Mapping[str, Any],
) -> RunSettings:
    """`cls(**values)`, or SettingsError naming the first value refused: as a flag if it
    is one of `flags`, else as a variable: `--grpc-port=x`, `WVA_GRPC_PORT='x'`."""
    try:
        return cls(**values)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        if field in flags:
            given = flags[field]
            text = " ".join(given) if isinstance(given, list | tuple) else given
            shown = f"{flag_of(field)}={text}"
        elif field in variables:
            shown = f"{env_variable(field)}={variables[field]!r}"
        else:
            shown = flag_of(field) if field else "run settings"
        raise SettingsError(f"{shown}: {_problem(first)}") from None


_EXPECTED = {
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "int_type": "expected a whole number",
    "bool_parsing": "expected true or false (also 1/0, yes/no, on/off)",
    "bool_type": "expected true or false (also 1/0, yes/no, on/off)",
}


def _problem(error: ErrorDetails) -> str:
    """What is wrong with a value, in the words of the checks above."""
    context = error.get("ctx", {})
    if error["type"] == "value_error":
        return str(context.get("error", error["msg"]))
    if error["type"] == "literal_error":
        return f"expected one of {context.get('expected', '')}"
    return _EXPECTED.get(error["type"], error["msg"])
