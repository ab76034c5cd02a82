"""``datadog dev``: run the scheduler, executor and connector locally as separate processes.

Each service is ``python -m datadog_platform.<svc>.main`` with the agreed flags. The
launcher reads the ``listening on HOST:PORT`` line each prints (so port 0 works),
waits until it answers ``grpc.health.v1`` Check with SERVING, and appends its logs to
``DATA_DIR/logs/<svc>.log``. It stops them with SIGTERM, then SIGKILL after a grace.
The children run in their own session so that Ctrl-C reaches only the launcher, which
then stops them in order (scheduler first).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.cli import commands
from datadog_platform.cli.api import ApiError, SchedulerClient
from datadog_platform.cli.errors import CliError, ExitCode, exit_code_for
from datadog_platform.cli.output import rpc_error_lines
from datadog_platform.core.config import DEFAULT_SCHEDULER_ADDRESS

DESCRIPTION = """\
Start the connector, executor and scheduler on this machine as separate processes,
with the SQLite store in DATA_DIR/scheduler.db and logs in DATA_DIR/logs/. The file
connection "local" is rooted at --root. Without --run, serve until Ctrl-C or SIGTERM.
With --run FILE, register that pipeline (or reuse the existing one of that name), run
it, wait for it, print its outputs, stop the services and exit with the run's code."""

HOST = "127.0.0.1"
LOG_TAIL_LINES = 20
# The services drain for this long on SIGTERM; the launcher waits a little longer.
CHILD_SHUTDOWN_GRACE = 5.0
STOP_GRACE = CHILD_SHUTDOWN_GRACE + 5.0
_LISTENING = "listening on "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``datadog dev``."""
    parser.add_argument(
        "--data-dir", default=".datadog", help="store and logs directory (default .datadog)"
    )
    parser.add_argument(
        "--root", default=".", help='root directory of the "local" file connection (default .)'
    )
    parser.add_argument("--run", metavar="FILE", help="run this pipeline file once, then stop")
    parser.add_argument(
        "--scheduler-port", type=_port, default=50051, metavar="PORT", help="0 picks a free port"
    )
    parser.add_argument("--executor-port", type=_port, default=50052, metavar="PORT")
    parser.add_argument("--connector-port", type=_port, default=50053, metavar="PORT")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long each service may take to become SERVING (default 30)",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=commands.DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help="with --run, how long to wait for the run (default 86400)",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


@dataclass
class ServiceProcess:
    """One started service: its process, log file and (once known) its address."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""
    _addresses: queue.Queue[str] = field(default_factory=queue.Queue)
    _pump: threading.Thread | None = None

    def close(self) -> None:
        """Let the output pump finish once the process is gone."""
        if self._pump is not None:
            self._pump.join(timeout=2)


def start_service(name: str, flags: list[str], data_dir: Path) -> ServiceProcess:
    """Start ``python -m datadog_platform.<name>.main FLAGS``, logging to ``DATA_DIR/logs``."""
    log_path = data_dir / "logs" / f"{name}.log"
    command = [sys.executable, "-m", f"datadog_platform.{name}.main", *flags]
    with log_path.open("ab") as log:
        log.write(f"--- {datetime.now().isoformat()} datadog dev: {' '.join(command)}\n".encode())
        log.flush()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DATADOG_SHUTDOWN_GRACE": str(CHILD_SHUTDOWN_GRACE),
        }
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,  # the child keeps its own descriptor; ours can close
            env=env,
            start_new_session=True,
        )
    service = ServiceProcess(name, process, log_path)
    assert process.stdout is not None
    service._pump = threading.Thread(
        target=_pump_stdout,
        args=(process.stdout, log_path, service._addresses),
        name=f"{name}-stdout",
        daemon=True,
    )
    service._pump.start()
    return service


def _pump_stdout(stdout: IO[bytes], log_path: Path, addresses: queue.Queue[str]) -> None:
    """Copy the child's stdout to its log, reporting the ``listening on`` line."""
    with stdout, log_path.open("ab", buffering=0) as log:
        for raw in iter(stdout.readline, b""):
            text = raw.decode(errors="replace").strip()
            if text.startswith(_LISTENING):
                addresses.put(text.removeprefix(_LISTENING).strip())
            log.write(raw)


def wait_ready(service: ServiceProcess, timeout: float) -> None:
    """Wait for the listening line, then for health SERVING; raise with the log tail if not."""
    deadline = time.monotonic() + timeout
    while not service.address:
        if service.process.poll() is not None:
            _startup_failed(service, f"exited with code {service.process.returncode}")
        if time.monotonic() > deadline:
            _startup_failed(service, f"did not start listening within {timeout:g}s")
        with contextlib.suppress(queue.Empty):
            service.address = service._addresses.get(timeout=0.1)
    with grpc.insecure_channel(service.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if service.process.poll() is not None:
                _startup_failed(service, f"exited with code {service.process.returncode}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _startup_failed(service, f"was not SERVING within {timeout:g}s")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=min(remaining, 2))
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not up yet; retry until the deadline
            time.sleep(0.1)


def _startup_failed(service: ServiceProcess, what: str) -> NoReturn:
    if service.process.poll() is not None:
        service.close()  # flush the rest of its output into the log first
    lines = [f"error: the {service.name} service {what}; last lines of {service.log_path}:"]
    lines += [f"  | {line}" for line in tail(service.log_path, LOG_TAIL_LINES)]
    raise CliError(lines, ExitCode.UNAVAILABLE)


def tail(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of a text file (empty if it cannot be read)."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(file.tell() - 64 * 1024, 0))
            lines = file.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return lines[-count:]


def stop_services(services: list[ServiceProcess], grace: float = STOP_GRACE) -> None:
    """SIGTERM every service (scheduler first), then SIGKILL whatever outlives ``grace``."""
    for service in reversed(services):
        if service.process.poll() is None:
            service.process.terminate()
    deadline = time.monotonic() + grace
    for service in reversed(services):
        try:
            service.process.wait(timeout=max(deadline - time.monotonic(), 0))
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            # Too slow, or the user pressed Ctrl-C again: do not wait any longer.
            service.process.kill()
            service.process.wait()
        service.close()


def start_all(args: argparse.Namespace, data_dir: Path, root: Path) -> list[ServiceProcess]:
    """Start connector, executor and scheduler in dependency order, each SERVING before the next.

    Started services are appended to the returned list as they come up; on failure the
    ones already started are stopped before the error propagates.
    """
    services: list[ServiceProcess] = []
    try:
        connector = _start(
            services,
            "connector",
            ["--listen", f"{HOST}:{args.connector_port}", "--root", str(root)],
            data_dir,
            args.startup_timeout,
        )
        executor = _start(
            services,
            "executor",
            ["--listen", f"{HOST}:{args.executor_port}", "--connector", connector.address],
            data_dir,
            args.startup_timeout,
        )
        _start(
            services,
            "scheduler",
            [
                "--listen",
                f"{HOST}:{args.scheduler_port}",
                "--store",
                str(data_dir / "scheduler.db"),
                "--executor",
                executor.address,
                "--connector",
                connector.address,
            ],
            data_dir,
            args.startup_timeout,
        )
    except BaseException:
        stop_services(services)
        raise
    return services


def _start(
    services: list[ServiceProcess], name: str, flags: list[str], data_dir: Path, timeout: float
) -> ServiceProcess:
    service = start_service(name, flags, data_dir)
    services.append(service)
    wait_ready(service, timeout)
    return service


def banner(services: list[ServiceProcess], data_dir: Path, root: Path, hints: bool) -> list[str]:
    """The addresses of the services and, with ``hints``, commands to try."""
    by_name = {s.name: s for s in services}
    scheduler = by_name["scheduler"].address
    lines = [
        f"DataDog dev mode: services running (data in {data_dir}, logs in {data_dir / 'logs'})",
        f'  connector  {by_name["connector"].address}  (file connection "local" at {root})',
        f"  executor   {by_name['executor'].address}",
        f"  scheduler  {scheduler}  (store {data_dir / 'scheduler.db'})",
    ]
    if not hints:
        return lines
    server = "" if scheduler == DEFAULT_SCHEDULER_ADDRESS else f" --server {scheduler}"
    lines += [
        "",
        "Try:",
        *(f"  grpcurl -plaintext {s.address} list" for s in services),
        f"  grpcurl -plaintext {scheduler} grpc.health.v1.Health/Check",
        f"  datadog{server} pipeline create -f examples/csv_to_parquet.yaml",
        f"  datadog{server} pipeline list",
        f"  datadog{server} pipeline run csv_to_parquet --wait",
        f"  datadog{server} connector list",
        "",
        "Press Ctrl-C to stop.",
    ]
    return lines


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (and SIGHUP) like Ctrl-C, so the same path stops the children."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_dev(args: argparse.Namespace) -> ExitCode:
    """``datadog dev``: start, then serve until stopped or run ``--run FILE`` once."""
    # Check the pipeline file before starting anything, so a typo costs no startup.
    pipeline = commands.load_spec(args.run) if args.run else None
    root = Path(args.root).resolve()
    if not root.is_dir():
        raise CliError(f"error: --root {args.root} is not a directory", ExitCode.INVALID_ARGUMENT)
    data_dir = Path(args.data_dir).resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)

    with _sigterm_as_interrupt():
        services = start_all(args, data_dir, root)
        try:
            commands.emit(banner(services, data_dir, root, hints=pipeline is None))
            if pipeline is None:
                return _serve(services)
            scheduler = next(s for s in services if s.name == "scheduler").address
            return _run_once(scheduler, pipeline, args)
        finally:
            commands.emit(["stopping the services..."])
            stop_services(services)
            commands.emit(["stopped"])


def _serve(services: list[ServiceProcess]) -> ExitCode:
    """Wait for Ctrl-C/SIGTERM; a service that dies on its own ends dev mode with an error."""
    try:
        while True:
            for service in services:
                if service.process.poll() is not None:
                    service.close()
                    lines = [
                        f"error: the {service.name} service exited with code "
                        f"{service.process.returncode}; last lines of {service.log_path}:",
                        *(f"  | {line}" for line in tail(service.log_path, LOG_TAIL_LINES)),
                    ]
                    raise CliError(lines, ExitCode.ERROR)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return ExitCode.OK  # the normal way to leave dev mode


def _run_once(
    scheduler: str, pipeline: pipeline_pb2.Pipeline, args: argparse.Namespace
) -> ExitCode:
    """Create (or reuse) the pipeline, run it with the ``--wait`` display, return its outcome."""
    try:
        with SchedulerClient(scheduler, timeout=args.timeout) as client:
            name = commands.create_pipeline(client, pipeline, reuse_existing=True)
            return commands.run_pipeline(client, name, wait=True, wait_timeout=args.wait_timeout)
    except ApiError as exc:
        # Report against the address actually used, not the global --server.
        details = exc.details
        raise CliError(rpc_error_lines(details, scheduler), exit_code_for(details.code)) from None
