"""`wva-adapter`: the command line.

Errors in the user's input end with a one-line message naming the object and field,
and a non-zero exit status; never a traceback.

Each subcommand imports its modules when it runs: the parser needs only the standard
library and `adapter.defaults`, so `--help` and `optimize` do not wait for grpc,
kubernetes or the simulator (tests/test_cli_imports.py, bench/startup.py).

`run` is the composition root: its flags and `WVA_*` variables become one typed
`RunSettings` (adapter/settings.py) that the rest of `run` reads, and it tunes the
interpreter for serving (adapter/runtime.py) around the parts it builds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from adapter.defaults import (
    DEFAULT_CONFIG_NAMESPACE,
    DEFAULT_RETENTION_S,
    ENV_PREFIX,
    SATURATION_POLICIES,
)
from adapter.sim.arguments import SimulateInputError
from adapter.sim.arguments import add_arguments as add_simulate_arguments

if TYPE_CHECKING:
    from adapter.collect.gateway import GatewaySource
    from adapter.collect.kube import KubeCache
    from adapter.collect.metrics import MetricsSource
    from adapter.collect.scrape import ScrapeTarget
    from adapter.engine import Snapshot
    from adapter.leader import LeaderElector
    from adapter.model.kube import ClusterSnapshot
    from adapter.scaler import TlsFiles
    from adapter.settings import RunSettings
    from adapter.status import StatusWriter

EXIT_OK = 0
EXIT_PARTIAL = 1  # some entries were invalid; the rest was solved
EXIT_INPUT = 2  # the input could not be used at all

TUTORIAL_STEPS = (
    ("tutorial-1-start.json", "job-1 starts: 8 req/s"),
    ("tutorial-2-second-stream.json", "job-2 joins: 16 req/s, ITL SLO violated"),
    ("tutorial-3-scaled.json", "both jobs, 2 replicas"),
    ("tutorial-4-second-stream-stopped.json", "job-2 stops"),
)


class InputError(Exception):
    """The user's input cannot be used; the message says what to fix."""


def _read_json(path: str, stdin: TextIO) -> Any:
    try:
        if path == "-":
            text = stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from error


def cmd_optimize(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from adapter.model.system import SystemFormatError, parse_system
    from adapter.optimizer.solution import format_log, optimize_parsed, to_json

    document = _read_json(args.system, stdin)
    try:
        parsed = parse_system(document)
    except SystemFormatError as error:
        raise InputError(f"{args.system}: {error}") from error
    for problem in parsed.problems:
        print(f"error: {problem}", file=err)
    solution = optimize_parsed(parsed)
    if args.format == "log":
        out.write(format_log(solution))
    else:
        json.dump(to_json(solution), out, indent=2)
        out.write("\n")
    return EXIT_PARTIAL if parsed.problems else EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """A scenario in a closed loop (the tutorial's, or --scenario misprofiled or
    from-zero), or (--optimizer-only) the tutorial's four steps."""
    del err, stdin
    if args.optimizer_only:
        return _optimizer_steps(out)
    from adapter.loop import LoopError, from_zero, misprofiled, run_demo, tutorial

    if not (math.isfinite(args.time_factor) and args.time_factor > 0):
        raise InputError(f"demo --time-factor {args.time_factor:g}: must be a finite number > 0")
    builds = {"tutorial": tutorial, "misprofiled": misprofiled, "from-zero": from_zero}
    try:
        scenario = builds[args.scenario](
            short=args.short, time_factor=args.time_factor, metrics=args.metrics
        )
    except ValueError as error:  # a combination the scenario refuses
        raise InputError(f"demo --scenario {args.scenario}: {error}") from error
    try:
        run_demo(scenario, Path(args.out), out)
    except LoopError as error:
        raise InputError(f"demo: {error} (logs in {args.out}/run)") from error
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """The control loops in virtual time (adapter.sim): policies compared on one trace."""
    del err, stdin
    from adapter.sim.command import run as run_simulate

    try:
        return run_simulate(args, out)
    except SimulateInputError as error:
        raise InputError(str(error)) from error


def _optimizer_steps(out: TextIO) -> int:
    """The tutorial's scenario through the optimizer, step by step, as a table."""
    from importlib import resources

    from adapter.model.system import parse_system
    from adapter.optimizer.goformat import go_float32
    from adapter.optimizer.solution import optimize_parsed

    samples = resources.files("adapter") / "samples"
    header = (
        f"{'step':<42} {'rate':>8} {'current':>7} {'desired':>7} {'ITL ms':>9} "
        f"{'wait ms':>8} {'max rpm/replica':>15} {'cost':>6}"
    )
    out.write(
        "Tutorial scenario (unsloth/Meta-Llama-3.1-8B on H100, Premium: ITL 9 ms, TTFT 1 s)\n"
    )
    out.write(header + "\n" + "-" * len(header) + "\n")
    for filename, label in TUTORIAL_STEPS:
        document = json.loads((samples / filename).read_text(encoding="utf-8"))
        parsed = parse_system(document)
        solution = optimize_parsed(parsed)
        server = parsed.spec.servers[0]
        decision = solution.decision(server.name)
        allocation = decision.allocation
        if allocation is None:
            out.write(f"{label:<42} {'':>8} no allocation: {decision.reason}\n")
            continue
        out.write(
            f"{label:<42} {go_float32(decision.arrival_rate):>8} "
            f"{server.current_alloc.num_replicas:>7} {allocation.num_replicas:>7} "
            f"{go_float32(allocation.serv_time):>9} {go_float32(allocation.wait_time):>8} "
            f"{float(allocation.max_rpm):>15.2f} {go_float32(allocation.cost):>6}\n"
        )
    out.write(
        "\nrate: requests/minute; ITL and wait: predicted per replica at the desired count.\n"
    )
    return EXIT_OK


def _scrape_targets(values: Sequence[str], default_namespace: str | None) -> list[ScrapeTarget]:
    from pydantic import ValidationError

    from adapter.collect.scrape import ScrapeTarget

    targets = []
    for value in values:
        namespace, sep, url = value.partition("=")
        if not sep or "://" in namespace:
            namespace, url = default_namespace or "", value
        if not namespace:
            raise InputError(
                f"--scrape {value}: say which namespace its load belongs to, as NAMESPACE=URL"
            )
        try:
            targets.append(ScrapeTarget(url=url, namespace=namespace))
        except ValidationError as error:
            raise InputError(f"--scrape {value}: {error.errors()[0]['msg']}") from error
    return targets


def _metrics_source(settings: RunSettings, default_namespace: str | None) -> MetricsSource:
    given = [f for f in ("scrape", "scrape_file", "prometheus") if getattr(settings, f)]
    if len(given) != 1:
        set_as = f" ({', '.join(settings.given_as(f) for f in given)} set)" if given else ""
        raise InputError(
            "give exactly one metrics source: --scrape URL..., --scrape-file FILE"
            f" or --prometheus URL{set_as}"
        )
    from pydantic import ValidationError

    from adapter.collect.scrape import ScrapeSettings, ScrapeSource, TargetsFile, TargetsFileError

    if settings.scrape:
        return ScrapeSource(
            ScrapeSettings(
                targets=tuple(_scrape_targets(settings.scrape, default_namespace)),
                window_s=settings.scrape_window,
            )
        )
    if settings.scrape_file:
        try:
            targets = TargetsFile(settings.scrape_file, default_namespace)
        except TargetsFileError as error:
            raise InputError(f"--scrape-file {error}") from error
        return ScrapeSource(
            ScrapeSettings(window_s=settings.scrape_window), discover=targets.targets
        )
    from adapter.collect.prometheus import PrometheusSettings, PrometheusSource

    # PrometheusSettings' field -> the RunSettings field it comes from
    fields = {
        "url": "prometheus",
        "window": "window",
        "ca_file": "prometheus_ca_file",
        "bearer_token_file": "prometheus_token_file",
        "insecure_skip_verify": "prometheus_insecure_skip_verify",
    }
    try:
        prometheus = PrometheusSettings(
            **{name: getattr(settings, field) for name, field in fields.items()}
        )
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        shown = settings.given_as(fields[name]) if name in fields else "Prometheus settings"
        problem = first.get("ctx", {}).get("error", first["msg"])  # no "Value error, "
        raise InputError(f"{shown}: {problem}") from error
    return PrometheusSource(prometheus)


@dataclass
class _Cluster:
    snapshot: Callable[[], ClusterSnapshot]
    shared_namespace: str | None = None  # the VAs' namespace when they all share one
    api_client: Any = None  # kubernetes.client.ApiClient when reading a real cluster
    cache: KubeCache | None = None


def _gateway_source(settings: RunSettings, metrics: MetricsSource) -> GatewaySource | None:
    """The gateway source the settings name, or None; InputError for a combination that
    cannot work."""
    from pydantic import ValidationError

    from adapter.collect.gateway import GatewayEndpoint, GatewayPrometheus, GatewayScrape
    from adapter.collect.prometheus import PrometheusSource

    if not settings.gateway and not settings.gateway_prometheus:
        return None
    if settings.gateway and settings.gateway_prometheus:
        raise InputError(
            f"give one gateway source: {settings.given_as('gateway')} or"
            f" {settings.given_as('gateway_prometheus')}"
        )
    if settings.min_replicas != 0:
        raise InputError(
            "the gateway's queue wakes variants at zero replicas: it needs --min-replicas 0"
        )
    if settings.gateway_prometheus:
        if not isinstance(metrics, PrometheusSource):
            raise InputError(
                f"{settings.given_as('gateway_prometheus')} reads the router's series from"
                " the --prometheus server: give --prometheus URL"
            )
        return GatewayPrometheus(metrics.instant)
    try:
        endpoints = [GatewayEndpoint.parse(item) for item in settings.gateway or ()]
    except ValidationError as error:
        raise InputError(f"--gateway: {error.errors()[0]['msg']}") from error
    token = settings.gateway_token_file
    return GatewayScrape(endpoints, bearer_token_file=Path(token) if token else None)


def _cluster_source(settings: RunSettings) -> _Cluster:
    if settings.local is not None:
        from adapter.collect.local import LocalFolder, LocalSourceError

        try:
            folder = LocalFolder(settings.local, config_namespace=settings.config_namespace)
        except LocalSourceError as error:
            raise InputError(str(error)) from error
        namespaces = {ns for ns, _ in folder.snapshot().variant_autoscalings}
        shared = next(iter(namespaces)) if len(namespaces) == 1 else None
        return _Cluster(folder.snapshot, shared)
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config

    from adapter.collect.kube import CacheSettings, KubeCache, watch_timeout_for

    try:
        if settings.kubeconfig:
            kube_config.load_kube_config(config_file=settings.kubeconfig)  # type: ignore[no-untyped-call]
        else:
            try:
                kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
            except kube_config.ConfigException:
                kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    except Exception as error:  # the client raises several unrelated types here
        raise InputError(f"cannot configure Kubernetes access: {error}") from error
    api_client = kube_client.ApiClient()
    cache = KubeCache(
        api_client,
        CacheSettings(
            namespaces=settings.namespace or (),
            config_namespace=settings.config_namespace,
            # a quiet watch is renewed well within --staleness, so the renewal proves sync
            watch_timeout_seconds=watch_timeout_for(settings.staleness_s),
        ),
    ).start()
    if not cache.wait_synced(timeout=settings.sync_timeout):
        cache.stop()
        raise InputError(f"the Kubernetes cache did not sync within {settings.sync_timeout:g} s")
    return _Cluster(cache.snapshot, None, api_client, cache)


def _rate_window_s(settings: RunSettings) -> float:
    """The span the metrics are rated over: Prometheus' window, or the scrapes'."""
    if settings.prometheus is not None:
        from adapter.collect.prometheus import duration_seconds

        return duration_seconds(settings.window)
    return max(settings.interval, settings.scrape_window)


def _tls(settings: RunSettings) -> TlsFiles | None:
    from adapter.scaler import TlsError, TlsFiles

    cert, key = settings.grpc_tls_cert_file, settings.grpc_tls_key_file
    ca = settings.grpc_tls_client_ca_file
    if cert is None and key is None:
        if ca is not None:
            raise InputError("--grpc-tls-client-ca-file needs --grpc-tls-cert-file and -key-file")
        return None
    if cert is None or key is None:
        raise InputError("give both --grpc-tls-cert-file and --grpc-tls-key-file")
    files = TlsFiles(Path(cert), Path(key), Path(ca) if ca else None)
    try:
        files.check()  # here, not as a serving process' failure to bind
    except TlsError as error:
        raise InputError(str(error)) from error
    return files


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """The adapter: a cycle every --interval seconds, served over gRPC and /metrics."""
    del out, err, stdin
    import asyncio

    from adapter import runtime
    from adapter.scaler import WorkerError

    settings: RunSettings = args.settings  # checked by parse_command_line
    tls = _tls(settings)
    restore = runtime.tune_for_serving()  # before the cache's threads start
    try:
        cluster = _cluster_source(settings)
        try:
            metrics = _metrics_source(settings, cluster.shared_namespace)
            gateway = _gateway_source(settings, metrics)
            after_cycle = runtime.SettleAfterCycle()
            return asyncio.run(_serve(settings, cluster, metrics, gateway, tls, after_cycle))
        except WorkerError as error:  # cannot bind the gRPC port, unreadable TLS files
            raise InputError(str(error)) from error
        finally:
            if cluster.cache is not None:
                cluster.cache.stop()
    finally:
        restore()


async def _serve(
    settings: RunSettings,
    cluster: _Cluster,
    metrics: MetricsSource,
    gateway: GatewaySource | None,
    tls: TlsFiles | None,
    after_cycle: Callable[[], None],
) -> int:
    import asyncio

    from adapter.assemble import AssemblySettings
    from adapter.clock import WallClock
    from adapter.engine import Engine, EngineStats
    from adapter.exporter import Exporter
    from adapter.learning import ProfileLearning
    from adapter.lookahead import LookAhead
    from adapter.scaler import (
        ScalerPool,
        ScalerSettings,
        ServerSettings,
        install_signal_handlers,
        serve_until,
    )
    from adapter.waker import Waker
    from adapter.zero import ScaleToZero

    clock = WallClock()
    staleness = settings.staleness_s
    engine: Engine | None = None

    def latest() -> Snapshot | None:
        return engine.latest if engine is not None else None

    # gRPC is served by worker processes fed with every snapshot (adapter/scaler/pool.py):
    # a running cycle holds this process' GIL, and must not delay an answer.
    server = ScalerPool(
        ServerSettings(
            address=f"{settings.grpc_host}:{settings.grpc_port}",
            reflection=settings.grpc_reflection,
            tls=tls,
            grace_s=settings.grace_period,
        ),
        ScalerSettings(staleness_s=staleness),
        workers=settings.grpc_workers,
    )
    stop = asyncio.Event()
    tasks = []
    writer: StatusWriter | None = None
    elector: LeaderElector | None = None
    if cluster.api_client is not None and not settings.no_status:
        from kubernetes import client as kube_client

        from adapter.leader import LeaderElector, LeaderSettings, default_identity
        from adapter.status import StatusSettings, StatusWriter

        if settings.leader_election:
            elector = LeaderElector(
                kube_client.CoordinationV1Api(cluster.api_client),
                LeaderSettings(
                    namespace=settings.leader_election_namespace,
                    name=settings.leader_election_id,
                    identity=settings.pod_name or default_identity(),
                ),
                clock,
            )
        cache = cluster.cache
        assert cache is not None
        writer = StatusWriter(
            kube_client.CustomObjectsApi(cluster.api_client),
            lambda: cache.snapshot().variant_autoscalings,
            clock,
            is_leader=(lambda: elector.is_leader) if elector is not None else (lambda: True),
            settings=StatusSettings(max_age_s=staleness),
        )

    def kubernetes_errors() -> dict[str, int]:
        counts = {}
        if writer is not None:
            counts["status_write"] = writer.errors_total
        if elector is not None:
            counts["lease"] = elector.errors_total
        return counts

    exporter = Exporter(
        latest,
        lambda: engine.stats if engine is not None else EngineStats(),
        clock,
        host=settings.metrics_host,
        port=settings.metrics_port,
        max_age_s=staleness,
        kubernetes_errors=kubernetes_errors,
        serving=server.serving,  # /readyz: gRPC is served, whatever the snapshot's age
        last_attempt=lambda: engine.last_attempt if engine is not None else None,  # /healthz
        interval_s=settings.interval,
        kubernetes_sync=cluster.cache.sync_state if cluster.cache is not None else None,
    )

    def published(snapshot: Snapshot) -> None:
        exporter.observe(snapshot)
        server.publish(snapshot)

    zero = ScaleToZero(settings.scale_to_zero_after) if settings.min_replicas == 0 else None

    engine = Engine(
        cluster=cluster.snapshot,
        metrics=metrics,
        clock=clock,
        settings=AssemblySettings(
            min_num_replicas=settings.min_replicas,
            unlimited=settings.unlimited,
            saturation_policy=settings.saturation_policy,
            attainment=settings.slo_attainment / 100.0 if settings.sizing == "attainment" else None,
            headroom=settings.headroom / 100.0,
        ),
        interval_s=settings.interval,
        staleness_s=staleness,
        on_snapshot=published,
        after_cycle=after_cycle,
        learning=None
        if settings.no_profile_learning
        else ProfileLearning(cycle_s=settings.interval, window_s=_rate_window_s(settings)),
        look_ahead=LookAhead(cycle_s=settings.interval) if settings.look_ahead else None,
        gateway=gateway,
        zero=zero,
    )
    waker = (
        Waker(engine, gateway, zero, clock, poll_s=settings.wake_poll)
        if gateway is not None and zero is not None
        else None
    )
    remove_handlers = install_signal_handlers(stop)
    exporter.start()
    try:
        port = await server.start()
        logging.getLogger("adapter").info(
            "serving KEDA external scaler on %s:%d, metrics on %s",
            settings.grpc_host,
            port,
            exporter.url,
        )
        # Shutdown in order: the cycle in progress ends, the status writer writes the
        # final snapshot, and only then is the Lease released (a successor must not write
        # while we still do).
        cycles_done, status_done = asyncio.Event(), asyncio.Event()

        async def cycles() -> None:
            try:
                await engine.run(stop, max_cycles=settings.cycles)
            finally:
                cycles_done.set()

        async def statuses(status_writer: StatusWriter) -> None:
            try:
                await status_writer.run(latest, cycles_done)
            finally:
                status_done.set()

        tasks.append(cycles())
        tasks.append(serve_until(server, stop))
        if waker is not None:
            tasks.append(waker.run(stop))
        if writer is not None:
            tasks.append(statuses(writer))
        if elector is not None:
            tasks.append(elector.run(status_done if writer is not None else stop))
        await asyncio.gather(*tasks)
    finally:
        remove_handlers()
        exporter.stop()
    return EXIT_OK if engine.latest is not None else EXIT_PARTIAL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wva-adapter",
        description="SLO-aware replica recommendations for vLLM variants (KEDA / HPA).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    optimize = commands.add_parser(
        "optimize", help="solve one optimizer-light SystemSpec JSON document"
    )
    optimize.add_argument("--system", required=True, help="SystemSpec JSON file, or - for stdin")
    optimize.add_argument("--format", choices=("json", "log"), default="json")
    optimize.set_defaults(handler=cmd_optimize)

    demo = commands.add_parser(
        "demo",
        help="the tutorial's scenario in a closed loop: guidellm, emulated vLLM, KEDA/HPA",
    )
    demo.add_argument("--out", default="demo-out", help="folder for summary.json, demo.png, logs")
    demo.add_argument("--short", action="store_true", help="the compressed CI run (~2.5 min)")
    demo.add_argument(
        "--scenario",
        choices=("tutorial", "misprofiled", "from-zero"),
        default="tutorial",
        help="the tutorial's two jobs (default); misprofiled: its first job on GPUs 1.2 x"
        " slower than the VA declares, for the adapter to learn the profile; from-zero: the"
        " Deployment starts at 0 replicas behind a gateway that holds requests, the first"
        " one wakes it (StreamIsActive pushed to KEDA), a second job takes it to 2, and"
        " after the load an idle tail parks it at 0 again (--metrics scrape only)",
    )
    demo.add_argument(
        "--time-factor",
        type=float,
        default=1.0,
        help="slow the emulated GPU down by this factor (SLOs scaled, rates divided)",
    )
    demo.add_argument(
        "--metrics",
        choices=("scrape", "prometheus"),
        default="scrape",
        help="how the adapter reads vLLM: scraping the pods (default), or through a real"
        " Prometheus scraping them (the deployed path; needs the `prometheus` binary)",
    )
    demo.add_argument(
        "--optimizer-only",
        action="store_true",
        help="only print the optimizer's decision at each step of the tutorial's log",
    )
    demo.set_defaults(handler=cmd_demo)

    simulate = commands.add_parser(
        "simulate",
        help="compare autoscaling policies on a load trace in virtual time (no cluster)",
    )
    add_simulate_arguments(simulate)
    simulate.set_defaults(handler=cmd_simulate)

    add_run_arguments(
        commands.add_parser(
            "run",
            help="run the adapter: collect, optimize, serve",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            # only the flags given reach RunSettings.load: the variables fill the others
            argument_default=argparse.SUPPRESS,
        )
    )
    return parser


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """`run`'s flags: one per RunSettings field, which holds its type, default and checks.

    Values stay text here; RunSettings converts and checks them as it does the variables'
    (tests/test_settings.py keeps these flags and its fields one to one).
    """
    cluster = run.add_argument_group("cluster (one of)")
    cluster.add_argument("--local", metavar="DIR", help="read VAs, ConfigMaps, Nodes from YAML")
    cluster.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    cluster.add_argument(
        "--namespace", action="append", help="watch VAs in this namespace (repeatable)"
    )
    cluster.add_argument(
        "--config-namespace",
        help="namespace of the accelerator-unit-costs and service-classes-config ConfigMaps"
        f" (default {DEFAULT_CONFIG_NAMESPACE})",
    )
    source = run.add_argument_group("metrics (one of)")
    source.add_argument(
        "--scrape", nargs="+", metavar="[NS=]URL", help="scrape these vLLM /metrics URLs"
    )
    source.add_argument(
        "--scrape-file",
        metavar="FILE",
        help="scrape the targets listed in FILE (Prometheus file_sd JSON/YAML), re-read on change",
    )
    source.add_argument(
        "--scrape-window",
        metavar="SECONDS",
        help="rate scraped counters over at least this long (default 0: the last cycle)",
    )
    source.add_argument("--prometheus", metavar="URL", help="Prometheus base URL")
    source.add_argument("--window", help="rate window for PromQL (default 1m)")
    source.add_argument("--prometheus-ca-file")
    source.add_argument("--prometheus-token-file")
    source.add_argument("--prometheus-insecure-skip-verify", action="store_true")
    gateway = run.add_argument_group("inference gateway (wakes variants at zero)")
    gateway.add_argument(
        "--gateway",
        nargs="+",
        metavar="[NS=]URL",
        help="scrape these llm-d router (EPP) /metrics URLs for requests waiting per model",
    )
    gateway.add_argument(
        "--gateway-token-file",
        help="bearer token for the --gateway endpoints, read at every scrape (in a"
        " cluster: the service account's token)",
    )
    gateway.add_argument(
        "--gateway-prometheus",
        action="store_true",
        help="read the router's (EPP's) series from the --prometheus server",
    )
    gateway.add_argument(
        "--scale-to-zero-after",
        metavar="SECONDS",
        help="with --min-replicas 0: go to zero after this long without traffic"
        f" (default {DEFAULT_RETENTION_S:g})",
    )
    gateway.add_argument(
        "--wake-poll",
        metavar="SECONDS",
        help="how often the gateway is read for a variant at zero (default 0.25)",
    )
    run.add_argument("--interval", help="seconds between cycles (default 15)")
    run.add_argument("--cycles", help="stop after this many cycles (default: never)")
    run.add_argument(
        "--staleness",
        help="seconds after which a snapshot is not served (default: 3 x --interval)",
    )
    run.add_argument("--min-replicas", help="0 allows scale to zero (default 1)")
    run.add_argument("--unlimited", action="store_true", help="ignore the nodes' GPU capacity")
    run.add_argument(
        "--saturation-policy",
        metavar="{" + ",".join(SATURATION_POLICIES) + "}",
        help="(default None)",
    )
    run.add_argument(
        "--slo-attainment",
        help="%% of requests sized to meet both SLOs; a class's slo-attainment wins (default 99)",
    )
    run.add_argument(
        "--sizing",
        metavar="{attainment,mean}",
        help="attainment, or mean: the reference's rule, mean ITL within the SLO"
        " (default attainment)",
    )
    run.add_argument(
        "--headroom",
        help="%% of the measured arrival rate sized for on top of it: replicas ready"
        " before a sudden rise, for GPU-hours (default 0)",
    )
    run.add_argument(
        "--look-ahead",
        action="store_true",
        help="size for the arrival rate forecast a start-up ahead (learned from the"
        " Deployment's scale-ups), never below the measured one",
    )
    run.add_argument(
        "--no-profile-learning",
        action="store_true",
        help="size with the VAs' declared profiles only (default: learn each one from its"
        " pods and size with it once the data refute the declared one)",
    )
    run.add_argument("--sync-timeout", help="initial cache sync, s (default 60)")
    serve = run.add_argument_group("serving")
    serve.add_argument("--grpc-host", help="(default 0.0.0.0)")
    serve.add_argument("--grpc-port", help="KEDA external scaler (default 9090)")
    serve.add_argument("--grpc-reflection", action="store_true", help="enable gRPC reflection")
    serve.add_argument("--grpc-tls-cert-file", help="PEM certificate chain (enables TLS)")
    serve.add_argument("--grpc-tls-key-file", help="PEM private key")
    serve.add_argument(
        "--grpc-tls-client-ca-file", help="PEM CA: clients must present a certificate it signed"
    )
    serve.add_argument("--grace-period", help="seconds for in-flight RPCs (default 5)")
    serve.add_argument(
        "--grpc-workers",
        help="gRPC serving processes sharing the port (default: 2, or 1 on a single CPU)",
    )
    serve.add_argument("--metrics-host", help="(default 0.0.0.0)")
    serve.add_argument("--metrics-port", help="/metrics /healthz /readyz (default 8080)")
    status = run.add_argument_group("VariantAutoscaling status (with a cluster)")
    status.add_argument("--no-status", action="store_true", help="do not write VA status")
    status.add_argument(
        "--leader-election", action="store_true", help="only the Lease holder writes status"
    )
    status.add_argument("--leader-election-namespace", help=f"(default {DEFAULT_CONFIG_NAMESPACE})")
    status.add_argument("--leader-election-id", help="Lease name (default wva-adapter-leader)")
    status.add_argument("--pod-name", help="this replica's identity (default: $POD_NAME)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(handler=cmd_run)
    run.epilog = _environment_epilog(run)


def env_variables(run: argparse.ArgumentParser) -> dict[str, str]:
    """The `WVA_*` variable of every `run` flag: variable -> flag, in the flags' order."""
    found = {}
    for action in run._actions:
        longs = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        if longs:
            found[ENV_PREFIX + action.dest.upper()] = longs[0]
    return found


def _environment_epilog(run: argparse.ArgumentParser) -> str:
    """The `run --help` epilog: every variable and its flag."""
    lines = [
        "environment:",
        "  Every flag can also be set by an environment variable WVA_<FLAG> (the long flag",
        "  in upper snake case); a flag on the command line wins over its variable.",
        "  On/off flags take true/false (1/0, yes/no, on/off); --namespace and --scrape take",
        "  a list separated by commas or spaces; an empty variable counts as unset. An",
        "  invalid variable exits with status 2 and a message naming it.",
        "",
    ]
    variables = env_variables(run)
    width = max(map(len, variables), default=0)
    lines += [f"  {name:<{width}}  {flag}" for name, flag in variables.items()]
    return "\n".join(lines)


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(name)


def parse_command_line(
    argv: Sequence[str] | None, environ: Mapping[str, str]
) -> argparse.Namespace:
    """The subcommand and its arguments. For `run`, they are `args.settings`, one
    RunSettings from the flags given and the `WVA_*` variables of `environ`.

    Raises InputError naming the variable or flag whose value cannot be used.
    """
    args = build_parser().parse_args(argv)
    if args.command != "run":
        return args  # other commands read no variables
    from adapter.settings import RunSettings, SettingsError

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "handler")}
    try:
        settings = RunSettings.load(flags, environ)
    except SettingsError as error:
        raise InputError(str(error)) from error
    return argparse.Namespace(command="run", handler=args.handler, settings=settings)


def parse_run_settings(argv: Sequence[str], environ: Mapping[str, str]) -> RunSettings:
    """The settings `wva-adapter ARGV` (a `run` command line) would run with."""
    args = parse_command_line(argv, environ)
    if args.command != "run":
        raise ValueError(f"not a run command line: {list(argv)}")
    settings: RunSettings = args.settings
    return settings


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    stdin = stdin if stdin is not None else sys.stdin
    try:
        args = parse_command_line(argv, os.environ if environ is None else environ)
    except InputError as error:
        print(f"error: {error}", file=err)
        return EXIT_INPUT
    logging.basicConfig(
        level=logging.DEBUG if args.command == "run" and args.settings.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    try:
        status: int = args.handler(args, out, err, stdin)
    except InputError as error:
        print(f"error: {error}", file=err)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
