"""`wva-adapter run`'s settings: one RunSettings from flags and `WVA_*` variables alike.

Precedence flag > variable > default; a value that cannot be used names its flag or its
variable; the parser's flags, the model's fields and the variables `--help` lists are
one to one. (The catalogue of bad values run end to end: tests/test_bad_input_catalogue.py.)
"""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path
from typing import Any

import pytest

from adapter.cli import (
    InputError,
    _subcommand,
    build_parser,
    env_variables,
    main,
    parse_command_line,
    parse_run_settings,
)
from adapter.defaults import DEFAULT_CONFIG_NAMESPACE
from adapter.settings import RunSettings, SettingsError, env_variable, flag_of
from tests.kube_helpers import SAMPLES

REPO = Path(__file__).resolve().parents[1]


def run_parser() -> argparse.ArgumentParser:
    return _subcommand(build_parser(), "run")


def settings(*flags: str, **environ: str) -> RunSettings:
    return parse_run_settings(["run", *flags], environ)


def refused(*flags: str, **environ: str) -> str:
    with pytest.raises(InputError) as error:
        settings(*flags, **environ)
    return str(error.value)


# ---------------------------------------------------------------- where values come from


def test_the_defaults_are_the_documented_ones() -> None:
    got = settings()
    assert got == RunSettings()
    assert got.model_dump() == {
        "local": None,
        "kubeconfig": None,
        "namespace": None,
        "config_namespace": DEFAULT_CONFIG_NAMESPACE,
        "scrape": None,
        "scrape_file": None,
        "scrape_window": 0.0,
        "prometheus": None,
        "window": "1m",
        "prometheus_ca_file": None,
        "prometheus_token_file": None,
        "prometheus_insecure_skip_verify": False,
        "gateway": None,
        "gateway_token_file": None,
        "gateway_prometheus": False,
        "interval": 15.0,
        "cycles": None,
        "staleness": None,
        "min_replicas": 1,
        "scale_to_zero_after": 300.0,
        "wake_poll": 0.25,
        "unlimited": False,
        "saturation_policy": "None",
        "slo_attainment": 99.0,
        "sizing": "attainment",
        "headroom": 0.0,
        "no_profile_learning": False,
        "look_ahead": False,
        "sync_timeout": 60.0,
        "grpc_host": "0.0.0.0",
        "grpc_port": 9090,
        "grpc_reflection": False,
        "grpc_tls_cert_file": None,
        "grpc_tls_key_file": None,
        "grpc_tls_client_ca_file": None,
        "grace_period": 5.0,
        "grpc_workers": None,
        "metrics_host": "0.0.0.0",
        "metrics_port": 8080,
        "no_status": False,
        "leader_election": False,
        "leader_election_namespace": DEFAULT_CONFIG_NAMESPACE,
        "leader_election_id": "wva-adapter-leader",
        "pod_name": None,
        "verbose": False,
    }
    assert got.staleness_s == 45.0  # 3 intervals


def test_environment_only() -> None:
    got = settings(
        WVA_PROMETHEUS="http://prometheus:9090",
        WVA_INTERVAL="7.5",
        WVA_CYCLES="3",
        WVA_STALENESS="20",
        WVA_LEADER_ELECTION="yes",
        WVA_UNLIMITED="off",
        WVA_NAMESPACE="team-a, team-b  team-c",
        WVA_SCRAPE="ns=http://a:8000/metrics,http://b:8000/metrics",
        WVA_SATURATION_POLICY="RoundRobin",
    )
    assert got.prometheus == "http://prometheus:9090"
    assert (got.interval, got.cycles, got.staleness_s) == (7.5, 3, 20.0)
    assert got.leader_election is True and got.unlimited is False
    assert got.namespace == ("team-a", "team-b", "team-c")
    assert got.scrape == ("ns=http://a:8000/metrics", "http://b:8000/metrics")
    assert got.saturation_policy == "RoundRobin"
    assert got.given_as("prometheus") == "WVA_PROMETHEUS"


def test_flags_only() -> None:
    got = settings(
        "--prometheus",
        "http://prometheus:9090",
        "--interval=2",
        "--namespace",
        "a",
        "--namespace",
        "b",
        "--scrape",
        "http://a/metrics",
        "http://b/metrics",
        "--leader-election",
        "--grpc-port",
        "0",
        "--min-replicas=0",
    )
    assert (got.prometheus, got.interval, got.grpc_port, got.min_replicas) == (
        "http://prometheus:9090",
        2.0,
        0,
        0,
    )
    assert got.namespace == ("a", "b") and got.scrape == ("http://a/metrics", "http://b/metrics")
    assert got.leader_election is True
    assert got.given_as("prometheus") == "--prometheus"


def test_a_flag_wins_over_its_variable_and_the_others_still_apply() -> None:
    got = settings(
        "--interval",
        "2",
        "--namespace",
        "ml",
        WVA_INTERVAL="30",
        WVA_NAMESPACE="team-a,team-b",
        WVA_GRPC_PORT="9999",
    )
    assert (got.interval, got.namespace, got.grpc_port) == (2.0, ("ml",), 9999)
    assert got.given_as("interval") == "--interval" and got.given_as("grpc_port") == "WVA_GRPC_PORT"


def test_on_off_words_and_unset_variables() -> None:
    for word in ("true", "1", "yes", "on", "TRUE", "On"):
        assert settings(WVA_NO_STATUS=word).no_status is True
    for word in ("false", "0", "no", "off"):
        assert settings(WVA_NO_STATUS=word).no_status is False
    # empty or blank: unset; the flag (a switch) still sets it
    assert settings(WVA_LEADER_ELECTION="").leader_election is False
    assert settings("--leader-election", WVA_LEADER_ELECTION="  ").leader_election is True
    assert settings("--leader-election", WVA_LEADER_ELECTION="false").leader_election is True


def test_only_the_exact_variable_names_count() -> None:
    # lower case is not our variable; Kubernetes' service links (a Service called
    # wva-adapter) and misspellings are not settings, and are not errors either
    got = settings(
        wva_interval="3",
        WVA_ADAPTER_SERVICE_HOST="10.0.0.1",
        WVA_ADAPTER_PORT="tcp://10.0.0.1:9090",
        WVA_INTERVALL="3",
    )
    assert got == RunSettings()


def test_the_model_alone_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WVA_INTERVAL", "3")
    assert RunSettings().interval == 15.0
    assert RunSettings(interval=3).interval == 3.0
    assert RunSettings.load({}, {"WVA_INTERVAL": "4"}).interval == 4.0


def test_other_commands_read_no_variables() -> None:
    args = parse_command_line(["demo"], {"WVA_INTERVAL": "fast"})
    assert args.command == "demo" and not hasattr(args, "settings")
    with pytest.raises(ValueError, match="not a run command line"):
        parse_run_settings(["demo"], {})


# ---------------------------------------------------------------- values that cannot be used


@pytest.mark.parametrize(
    ("variable", "text", "says"),
    [
        ("WVA_INTERVAL", "fast", "WVA_INTERVAL='fast': expected a number"),
        ("WVA_INTERVAL", "inf", "WVA_INTERVAL='inf': must be a finite number of seconds > 0"),
        ("WVA_CYCLES", "2.5", "WVA_CYCLES='2.5': expected a whole number"),
        ("WVA_CYCLES", "0", "WVA_CYCLES='0': must be >= 1"),
        ("WVA_GRPC_PORT", "70000", "WVA_GRPC_PORT='70000': must be a port number 0..65535"),
        ("WVA_MIN_REPLICAS", "-1", "WVA_MIN_REPLICAS='-1': must be >= 0 (0 allows scale to zero)"),
        (
            "WVA_GRACE_PERIOD",
            "-1",
            "WVA_GRACE_PERIOD='-1': must be a finite number of seconds >= 0",
        ),
        ("WVA_LEADER_ELECTION", "maybe", "WVA_LEADER_ELECTION='maybe': expected true or false"),
        ("WVA_SATURATION_POLICY", "Greedy", "WVA_SATURATION_POLICY='Greedy': expected one of"),
    ],
)
def test_a_bad_variable_is_named(variable: str, text: str, says: str) -> None:
    assert says in refused(**{variable: text})


def test_a_bad_variable_is_named_even_when_its_flag_wins() -> None:
    message = refused("--interval", "5", WVA_INTERVAL="fast")
    assert message == "WVA_INTERVAL='fast': expected a number"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--interval", "fast"], "--interval=fast: expected a number"),
        (["--interval", "0"], "--interval=0: must be a finite number of seconds > 0"),
        (["--sync-timeout", "inf"], "--sync-timeout=inf: must be a finite number of seconds > 0"),
        (["--grpc-workers", "0"], "--grpc-workers=0: must be >= 1"),
        (["--metrics-port=-1"], "--metrics-port=-1: must be a port number 0..65535"),
        (["--cycles", "two"], "--cycles=two: expected a whole number"),
        (["--saturation-policy", "Greedy"], "--saturation-policy=Greedy: expected one of 'None'"),
    ],
)
def test_a_bad_flag_is_named(flags: list[str], says: str) -> None:
    assert says in refused(*flags)


def test_a_bad_flag_is_named_even_when_its_variable_is_good() -> None:
    assert refused("--grpc-port", "x", WVA_GRPC_PORT="9000").startswith("--grpc-port=x:")


def test_a_combination_names_where_each_setting_came_from() -> None:
    err = io.StringIO()
    status = main(
        ["run", "--local", str(SAMPLES), "--scrape", "http://127.0.0.1:9/metrics"],
        out=io.StringIO(),
        err=err,
        environ={"WVA_PROMETHEUS": "http://127.0.0.1:9"},
    )
    assert status == 2
    assert err.getvalue() == (
        "error: give exactly one metrics source: --scrape URL..., --scrape-file FILE or"
        " --prometheus URL (--scrape, WVA_PROMETHEUS set)\n"
    )


@pytest.mark.parametrize(
    ("flags", "environ", "says"),
    [
        (["--prometheus", "ftp://x"], {}, "--prometheus: url must start with http://"),
        ([], {"WVA_PROMETHEUS": "ftp://x"}, "WVA_PROMETHEUS: url must start with http://"),
        (["--prometheus", "http://x", "--window", "5q"], {}, "--window: window '5q' is not"),
    ],
)
def test_prometheus_settings_name_their_flag_or_variable(
    flags: list[str], environ: dict[str, str], says: str
) -> None:
    err = io.StringIO()
    status = main(["run", "--local", str(SAMPLES), *flags], err=err, environ=environ)
    assert status == 2 and err.getvalue().startswith(f"error: {says}"), err.getvalue()


def test_settings_error_is_a_value_error() -> None:
    with pytest.raises(SettingsError):
        RunSettings.load({"interval": "x"}, {})
    assert issubclass(SettingsError, ValueError)


# ---------------------------------------------------------------- flags, fields and variables


def test_every_flag_is_a_field_and_every_field_a_flag() -> None:
    flags = {
        action.dest: next(o for o in action.option_strings if o.startswith("--"))
        for action in run_parser()._actions
        if action.option_strings and action.dest != "help"
    }
    assert flags == {field: flag_of(field) for field in RunSettings.model_fields}


def test_every_flag_has_its_variable_and_every_variable_its_flag() -> None:
    listed = env_variables(run_parser())
    assert listed == {env_variable(f): flag_of(f) for f in RunSettings.model_fields}
    for variable, flag in listed.items():  # and each one is read
        field = flag[2:].replace("-", "_")
        special = {"saturation_policy": "RoundRobin", "sizing": "mean"}
        text = special.get(field, "1")  # "1" is valid for all others
        assert RunSettings.load({}, {variable: text}).model_fields_set == {field}


def test_help_lists_every_variable_with_its_flag() -> None:
    text = run_parser().format_help()
    for field in RunSettings.model_fields:
        assert re.search(rf"^  {env_variable(field)} +{flag_of(field)}$", text, re.M), field
    assert "a flag on the command line wins over its variable" in text


def test_help_shows_the_models_defaults() -> None:
    """`--help` cannot import the model (tests/test_cli_imports.py): the defaults its
    help strings state must be the model's."""
    helps = {a.dest: a.help or "" for a in run_parser()._actions}
    for field, info in RunSettings.model_fields.items():
        default: Any = info.default
        if default is None or isinstance(default, bool):
            continue
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        assert f"(default {shown}" in helps[field], (field, helps[field])


def test_the_variables_that_deploy_and_docs_use_exist() -> None:
    known = set(env_variables(run_parser()))
    used: set[str] = set()
    for folder in ("deploy", "docs"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix in {".yaml", ".yml", ".md"}:
                used |= set(re.findall(r"\bWVA_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert "WVA_PROMETHEUS" in used
    assert used <= known, used - known
