"""The `tiket` command: run the mesh, one service, migrations, demo data, tokens, health."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys

import grpc

from cli import demo, dlq, facility, fares, health, infra, keys, supervisor
from cli.table import render
from gate import cli as gate_cli
from libs import auth, tls
from libs.config import ConfigError, Settings, load
from libs.events import topology
from libs.events.bus import BusUnavailable
from libs.server import runtime, workers
from services import registry


def main(argv: list[str] | None = None) -> None:
    # Lines reach a pipe or a log file as they are printed (`tiket up | tee up.log`).
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = _parser()
    args = parser.parse_args(argv)
    if args.run is _up:
        # `tiket up` (make run) is the local launcher: development unless told otherwise.
        # Everything else, `tiket serve` in a container included, must say what it is.
        os.environ.setdefault("TIKET_ENV", "development")
    try:
        settings = load()
        args.run(args, settings)
    except ConfigError as exc:
        sys.exit(f"tiket: configuration error: {exc}")
    except KeyError as exc:
        sys.exit(f"tiket: {exc.args[0]}")
    except KeyboardInterrupt:
        sys.exit(130)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiket", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start every service, each in its own process")
    up.add_argument("--seed", action="store_true", help="load the demo data once serving")
    up.add_argument("--only", nargs="+", metavar="NAME", help="start only these services")
    up.set_defaults(run=_up)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("name", choices=sorted(registry.SERVICES))
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes sharing the port, one per core (default: TIKET_WORKERS, else 1)",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="create databases and apply migrations")
    migrate.add_argument("names", nargs="*", metavar="NAME", help="default: every service")
    migrate.set_defaults(run=_migrate)

    seed = commands.add_parser("seed", help="load the demo data into the running services")
    seed.set_defaults(run=lambda a, s: asyncio.run(_seed(s)))

    status = commands.add_parser("status", help="health of every service")
    status.set_defaults(run=lambda a, s: asyncio.run(_status(s)))

    keys.register(commands)
    fares.register(commands)
    dlq.register(commands)
    demo.register(commands)
    gate_cli.register(commands)
    facility.register(commands)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    definition = registry.definition(args.name)
    count = args.workers or settings.workers
    if (worker := workers.worker_number()) or count == 1:
        runtime.run(definition, settings, worker=worker)
    else:
        workers.serve_workers(definition, settings, count)


def _up(args: argparse.Namespace, settings: Settings) -> None:
    names = args.only or list(registry.SERVICES)
    for name in names:
        registry.definition(name)  # unknown names fail before anything starts
    if settings.tls_server or settings.tls_ca:
        sys.exit(
            "tiket: `tiket up` runs the mesh in plaintext on loopback; unset TIKET_TLS_* "
            "(TLS is for deployments without Istio: `tiket serve NAME`)"
        )
    keys.ensure_development_keys(settings)
    print("tiket: checking PostgreSQL, Redis and RabbitMQ …")
    try:
        private = infra.ensure_dependencies(settings, infra.default_state_dir(), out=print)
    except infra.InfraError as exc:
        sys.exit(f"tiket: {exc}")
    try:
        # Every consumer's queue exists before any service emits: events wait for a
        # consumer that starts late (or not at all in an --only run).
        exchange = settings.events_exchange
        asyncio.run(topology.apply(settings.amqp_url, exchange, registry.topology(exchange)))
        asyncio.run(_run_mesh(names, settings, seed=args.seed))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    except (RuntimeError, BusUnavailable) as exc:
        sys.exit(f"tiket: {exc}")
    finally:
        if private:
            print("tiket: stopping the private PostgreSQL/Redis/RabbitMQ started for this run")
            infra.stop_private(private)


async def _run_mesh(names: list[str], settings: Settings, *, seed: bool) -> None:
    # Ctrl-C and SIGTERM (a process manager stopping us) both stop the mesh in order. Set
    # explicitly: a SIGINT ignored by whoever started us (a background job) is inherited.
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, main.cancel)
    print(f"tiket: starting {', '.join(names)} …")
    children = await supervisor.start_all(names, settings, print)
    try:
        if seed:
            await _seed(settings, names)
        _print_endpoints(names, settings)
        print("tiket: streaming logs; Ctrl-C stops everything\n")
        await supervisor.watch(children, settings, print)
    finally:
        print("\ntiket: stopping services (draining in-flight calls) …")
        await supervisor.stop_all(children, settings.grace_seconds, print)
        print("tiket: stopped")


def _print_endpoints(names: list[str], settings: Settings) -> None:
    rows = [
        (
            name,
            ", ".join(registry.grpc_service_names(name)),
            settings.addresses[name],
            f"http://127.0.0.1:{settings.metrics_ports[name]}/metrics",
        )
        for name in names
    ]
    print()
    print(render(["service", "gRPC API", "address", "metrics"], rows))
    user = settings.addresses["user"]
    print(
        f"""
Try it:
  grpcurl -plaintext {user} list
  grpcurl -plaintext {user} describe tiket.user.v1.UserService
  TOKEN=$(.venv/bin/tiket token --role admin --sub ops)
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"card_id": "CARD0001"}}' \\
      {user} tiket.user.v1.UserService/GetUser
"""
    )


def _migrate(args: argparse.Namespace, settings: Settings) -> None:
    for name in args.names or list(registry.SERVICES):
        applied = runtime.prepare_database(registry.definition(name), settings)
        database = settings.database_name(name)
        print(f"{name}: {database}: " + (", ".join(applied) if applied else "up to date"))


async def _seed(settings: Settings, names: list[str] | None = None) -> None:
    metadata = keys.bearer(keys.cli_token(settings, auth.Role.ADMIN, "tiket-seed"))
    credentials = tls.channel_credentials(settings)  # TLS when TIKET_TLS_CA is set
    print("tiket: loading demo data")
    riders: list[str] = []  # the user demo's riders, for whom the facility demo books
    for name in names or list(registry.SERVICES):
        try:
            demo = importlib.import_module(f"services.{name}.demo")
        except ModuleNotFoundError:
            continue
        address = settings.addresses[name]
        async with tls.open_channel(address, credentials) as channel:
            try:
                if name == "booking":
                    await demo.load(channel, metadata, print, riders)
                elif name == "user":
                    riders = await demo.load(channel, metadata, print)
                else:
                    await demo.load(channel, metadata, print)
            except grpc.RpcError as exc:
                unreachable = exc.code() is grpc.StatusCode.UNAVAILABLE
                hint = "; start the mesh first (make run)" if unreachable else ""
                sys.exit(
                    f"tiket seed: the {name} service at {address}: {exc.code().name}: "
                    f"{exc.details()}{hint}"
                )


async def _status(settings: Settings) -> None:
    credentials = tls.channel_credentials(settings)  # TLS when TIKET_TLS_CA is set
    rows = []
    for name in registry.SERVICES:
        service = registry.grpc_service_names(name)[0]
        address = settings.addresses[name]
        rows.append((name, address, await health.check(address, service, credentials=credentials)))
    print(render(["service", "address", "health"], rows))
    if any(row[2] != "SERVING" for row in rows):
        print("\nNot every service is serving: start them with `tiket up` (or `make run`).")
        sys.exit(1)


if __name__ == "__main__":
    main()
