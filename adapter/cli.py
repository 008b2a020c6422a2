"""`wva-adapter`: the command line.

Errors in the user's input end with a one-line message naming the object and field,
and a non-zero exit status; never a traceback.

Each subcommand imports its modules when it runs: the parser needs only the standard
library and `adapter.defaults`, so `--help` and `optimize` do not wait for grpc,
kubernetes or the simulator (tests/test_cli_imports.py, bench/startup.py).
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

from adapter.defaults import DEFAULT_CONFIG_NAMESPACE, SATURATION_POLICIES
from adapter.settings import SettingsError, check_run_values, env_defaults, env_epilog
from adapter.sim.arguments import SimulateInputError
from adapter.sim.arguments import add_arguments as add_simulate_arguments

if TYPE_CHECKING:
    from adapter.collect.kube import KubeCache
    from adapter.collect.metrics import MetricsSource
    from adapter.collect.scrape import ScrapeTarget
    from adapter.engine import Snapshot
    from adapter.leader import LeaderElector
    from adapter.model.kube import ClusterSnapshot
    from adapter.scaler import TlsFiles
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
    """The tutorial's scenario in a closed loop, or (--optimizer-only) its four steps."""
    del err, stdin
    if args.optimizer_only:
        return _optimizer_steps(out)
    from adapter.loop import LoopError, run_demo, tutorial

    if not (math.isfinite(args.time_factor) and args.time_factor > 0):
        raise InputError(f"demo --time-factor {args.time_factor:g}: must be a finite number > 0")
    scenario = tutorial(short=args.short, time_factor=args.time_factor)
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


def _metrics_source(args: argparse.Namespace, default_namespace: str | None) -> MetricsSource:
    if sum(map(bool, (args.scrape, args.scrape_file, args.prometheus))) != 1:
        raise InputError(
            "give exactly one metrics source: --scrape URL..., --scrape-file FILE"
            " or --prometheus URL"
        )
    from pydantic import ValidationError

    from adapter.collect.scrape import ScrapeSettings, ScrapeSource, TargetsFile, TargetsFileError

    if args.scrape:
        return ScrapeSource(
            ScrapeSettings(
                targets=tuple(_scrape_targets(args.scrape, default_namespace)),
                window_s=args.scrape_window,
            )
        )
    if args.scrape_file:
        try:
            targets = TargetsFile(args.scrape_file, default_namespace)
        except TargetsFileError as error:
            raise InputError(f"--scrape-file {error}") from error
        return ScrapeSource(ScrapeSettings(window_s=args.scrape_window), discover=targets.targets)
    from adapter.collect.prometheus import PrometheusSettings, PrometheusSource

    try:
        settings = PrometheusSettings(
            url=args.prometheus,
            window=args.window,
            ca_file=args.prometheus_ca_file,
            bearer_token_file=args.prometheus_token_file,
            insecure_skip_verify=args.prometheus_insecure_skip_verify,
        )
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InputError(f"Prometheus settings: {field}: {first['msg']}") from error
    return PrometheusSource(settings)


@dataclass
class _Cluster:
    snapshot: Callable[[], ClusterSnapshot]
    shared_namespace: str | None = None  # the VAs' namespace when they all share one
    api_client: Any = None  # kubernetes.client.ApiClient when reading a real cluster
    cache: KubeCache | None = None


def _cluster_source(args: argparse.Namespace) -> _Cluster:
    if args.local is not None:
        from adapter.collect.local import LocalFolder, LocalSourceError

        try:
            folder = LocalFolder(args.local, config_namespace=args.config_namespace)
        except LocalSourceError as error:
            raise InputError(str(error)) from error
        namespaces = {ns for ns, _ in folder.snapshot().variant_autoscalings}
        shared = next(iter(namespaces)) if len(namespaces) == 1 else None
        return _Cluster(folder.snapshot, shared)
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config

    from adapter.collect.kube import CacheSettings, KubeCache

    try:
        if args.kubeconfig:
            kube_config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
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
            namespaces=tuple(args.namespace or ()), config_namespace=args.config_namespace
        ),
    ).start()
    if not cache.wait_synced(timeout=args.sync_timeout):
        cache.stop()
        raise InputError(f"the Kubernetes cache did not sync within {args.sync_timeout:g} s")
    return _Cluster(cache.snapshot, None, api_client, cache)


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    from adapter.scaler import TlsError, TlsFiles

    cert, key, ca = args.grpc_tls_cert_file, args.grpc_tls_key_file, args.grpc_tls_client_ca_file
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
    del out, err, stdin  # values were checked by parse_run_settings
    import asyncio

    from adapter.memory import tune_allocator
    from adapter.scaler import WorkerError

    tls = _tls(args)
    tune_allocator()  # before the cache's threads start
    cluster = _cluster_source(args)
    try:
        metrics = _metrics_source(args, cluster.shared_namespace)
        return asyncio.run(_serve(args, cluster, metrics, tls))
    except WorkerError as error:  # cannot bind the gRPC port, unreadable TLS files
        raise InputError(str(error)) from error
    finally:
        if cluster.cache is not None:
            cluster.cache.stop()


async def _serve(
    args: argparse.Namespace, cluster: _Cluster, metrics: MetricsSource, tls: TlsFiles | None
) -> int:
    import asyncio

    from adapter.assemble import AssemblySettings
    from adapter.clock import WallClock
    from adapter.engine import Engine, EngineStats
    from adapter.exporter import Exporter
    from adapter.scaler import (
        ScalerPool,
        ScalerSettings,
        ServerSettings,
        install_signal_handlers,
        serve_until,
    )

    clock = WallClock()
    staleness = args.staleness if args.staleness is not None else 3 * args.interval
    engine: Engine | None = None

    def latest() -> Snapshot | None:
        return engine.latest if engine is not None else None

    # gRPC is served by worker processes fed with every snapshot (adapter/scaler/pool.py):
    # a running cycle holds this process' GIL, and must not delay an answer.
    server = ScalerPool(
        ServerSettings(
            address=f"{args.grpc_host}:{args.grpc_port}",
            reflection=args.grpc_reflection,
            tls=tls,
            grace_s=args.grace_period,
        ),
        ScalerSettings(staleness_s=staleness),
        workers=args.grpc_workers,
    )
    stop = asyncio.Event()
    tasks = []
    writer: StatusWriter | None = None
    elector: LeaderElector | None = None
    if cluster.api_client is not None and not args.no_status:
        from kubernetes import client as kube_client

        from adapter.leader import LeaderElector, LeaderSettings, default_identity
        from adapter.status import StatusSettings, StatusWriter

        if args.leader_election:
            elector = LeaderElector(
                kube_client.CoordinationV1Api(cluster.api_client),
                LeaderSettings(
                    namespace=args.leader_election_namespace,
                    name=args.leader_election_id,
                    identity=args.pod_name or default_identity(),
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
        host=args.metrics_host,
        port=args.metrics_port,
        max_age_s=staleness,
        kubernetes_errors=kubernetes_errors,
        serving=server.serving,  # /readyz: gRPC is served, whatever the snapshot's age
        last_attempt=lambda: engine.last_attempt if engine is not None else None,  # /healthz
        interval_s=args.interval,
    )

    def published(snapshot: Snapshot) -> None:
        exporter.observe(snapshot)
        server.publish(snapshot)

    engine = Engine(
        cluster=cluster.snapshot,
        metrics=metrics,
        clock=clock,
        settings=AssemblySettings(
            min_num_replicas=args.min_replicas,
            unlimited=args.unlimited,
            saturation_policy=args.saturation_policy,
        ),
        interval_s=args.interval,
        on_snapshot=published,
    )
    remove_handlers = install_signal_handlers(stop)
    exporter.start()
    try:
        port = await server.start()
        logging.getLogger("adapter").info(
            "serving KEDA external scaler on %s:%d, metrics on %s",
            args.grpc_host,
            port,
            exporter.url,
        )
        # Shutdown in order: the cycle in progress ends, the status writer writes the
        # final snapshot, and only then is the Lease released (a successor must not write
        # while we still do).
        cycles_done, status_done = asyncio.Event(), asyncio.Event()

        async def cycles() -> None:
            try:
                await engine.run(stop, max_cycles=args.cycles)
            finally:
                cycles_done.set()

        async def statuses(status_writer: StatusWriter) -> None:
            try:
                await status_writer.run(latest, cycles_done)
            finally:
                status_done.set()

        tasks.append(cycles())
        tasks.append(serve_until(server, stop))
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
        "--time-factor",
        type=float,
        default=1.0,
        help="slow the emulated GPU down by this factor (SLOs scaled, rates divided)",
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

    run = commands.add_parser(
        "run",
        help="run the adapter: collect, optimize, serve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cluster = run.add_argument_group("cluster (one of)")
    cluster.add_argument("--local", metavar="DIR", help="read VAs, ConfigMaps, Nodes from YAML")
    cluster.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    cluster.add_argument(
        "--namespace", action="append", help="watch VAs in this namespace (repeatable)"
    )
    cluster.add_argument(
        "--config-namespace",
        default=DEFAULT_CONFIG_NAMESPACE,
        help="namespace of the accelerator-unit-costs and service-classes-config ConfigMaps",
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
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="rate scraped counters over at least this long (default 0: the last cycle)",
    )
    source.add_argument("--prometheus", metavar="URL", help="Prometheus base URL")
    source.add_argument("--window", default="1m", help="rate window for PromQL (default 1m)")
    source.add_argument("--prometheus-ca-file")
    source.add_argument("--prometheus-token-file")
    source.add_argument("--prometheus-insecure-skip-verify", action="store_true")
    run.add_argument("--interval", type=float, default=15.0, help="seconds between cycles")
    run.add_argument("--cycles", type=int, help="stop after this many cycles (default: never)")
    run.add_argument(
        "--staleness",
        type=float,
        help="seconds after which a snapshot is not served (default: 3 x --interval)",
    )
    run.add_argument("--min-replicas", type=int, default=1, help="0 allows scale to zero")
    run.add_argument("--unlimited", action="store_true", help="ignore the nodes' GPU capacity")
    run.add_argument("--saturation-policy", default="None", choices=SATURATION_POLICIES)
    run.add_argument("--sync-timeout", type=float, default=60.0, help="initial cache sync, s")
    serve = run.add_argument_group("serving")
    serve.add_argument("--grpc-host", default="0.0.0.0")
    serve.add_argument("--grpc-port", type=int, default=9090, help="KEDA external scaler")
    serve.add_argument("--grpc-reflection", action="store_true", help="enable gRPC reflection")
    serve.add_argument("--grpc-tls-cert-file", help="PEM certificate chain (enables TLS)")
    serve.add_argument("--grpc-tls-key-file", help="PEM private key")
    serve.add_argument(
        "--grpc-tls-client-ca-file", help="PEM CA: clients must present a certificate it signed"
    )
    serve.add_argument("--grace-period", type=float, default=5.0, help="seconds for in-flight RPCs")
    serve.add_argument(
        "--grpc-workers",
        type=int,
        help="gRPC serving processes sharing the port (default: 2, or 1 on a single CPU)",
    )
    serve.add_argument("--metrics-host", default="0.0.0.0")
    serve.add_argument("--metrics-port", type=int, default=8080, help="/metrics /healthz /readyz")
    status = run.add_argument_group("VariantAutoscaling status (with a cluster)")
    status.add_argument("--no-status", action="store_true", help="do not write VA status")
    status.add_argument(
        "--leader-election", action="store_true", help="only the Lease holder writes status"
    )
    status.add_argument("--leader-election-namespace", default=DEFAULT_CONFIG_NAMESPACE)
    status.add_argument("--leader-election-id", default="wva-adapter-leader", help="Lease name")
    status.add_argument("--pod-name", help="this replica's identity (default: $POD_NAME)")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(handler=cmd_run)
    run.epilog = env_epilog(run)
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(name)


def parse_run_settings(
    argv: Sequence[str] | None, environ: Mapping[str, str]
) -> argparse.Namespace:
    """Parse the command line; for `run`, flags not given come from `WVA_<FLAG>` variables.

    Raises InputError naming the variable or flag whose value cannot be used.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        return args
    run = _subcommand(parser, "run")
    try:
        from_env = {dest: value for dest, (_, value) in env_defaults(run, environ).items()}
        # repeatable flags would add to a default list: fill those only when not given
        appended = {a.dest for a in run._actions if isinstance(a, argparse._AppendAction)}
        run.set_defaults(**{d: v for d, v in from_env.items() if d not in appended})
        args = parser.parse_args(argv)
        for dest in appended & from_env.keys():
            if getattr(args, dest) is None:
                setattr(args, dest, from_env[dest])
        check_run_values(run, args)
    except SettingsError as error:
        raise InputError(str(error)) from error
    return args


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
        args = parse_run_settings(argv, os.environ if environ is None else environ)
    except InputError as error:
        print(f"error: {error}", file=err)
        return EXIT_INPUT
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
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
