"""Make PostgreSQL, Redis and RabbitMQ answer before `tiket up` starts the services.

For every dependency that does not answer at its configured (local) address, a PRIVATE
instance is started from the machine's binaries under a state directory (default `.tiket/`),
listening on the configured port; missing binaries are installed with apt-get when that is
possible (Debian/Ubuntu, running as root), else the one command that installs them is shown.

    instances = ensure_dependencies(settings, Path(".tiket"))
    try:
        ...  # run the services
    finally:
        stop_private(instances)

A private instance's data directory is kept between runs and reused by the next one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from libs.config import Settings

Out = Callable[[str], object]

DEFAULT_STATE_DIR = Path(".tiket")
STOP_TIMEOUT = 60.0  # seconds a clean stop may take before the process is killed
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_PORTS = {
    "postgresql": 5432,
    "postgres": 5432,
    "redis": 6379,
    "rediss": 6379,
    "amqp": 5672,
    "amqps": 5671,
}


class InfraError(RuntimeError):
    """A dependency cannot be made to answer; the message says what to do."""


def endpoint(url: str) -> tuple[str, int]:
    """(host, port) of a postgresql://, redis:// or amqp:// URL, with the scheme's default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {_redact(url)}")
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[scheme]


def probe(url: str, timeout: float = 1.0) -> bool:
    """True when a TCP connection to the URL's host:port succeeds within `timeout` seconds."""
    host, port = endpoint(url)
    return _answers(host, port, timeout)


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """TIKET_STATE_DIR when set, else `.tiket` in the current directory."""
    env = os.environ if env is None else env
    return Path(env.get("TIKET_STATE_DIR") or DEFAULT_STATE_DIR)


@dataclass
class PrivateInstance:
    """A server this module started; pass it to stop_private()."""

    dependency: Dependency
    host: str
    port: int
    data_dir: Path
    log: Path
    bins: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    stopped: bool = False

    @property
    def name(self) -> str:
        return self.dependency.title

    @property
    def address(self) -> str:
        return _hostport(self.host, self.port)


class Dependency(ABC):
    """One server kind: where its binaries are, how to start and stop a private instance."""

    title: ClassVar[str]  # "PostgreSQL"
    key: ClassVar[str]  # state-dir name: .tiket/<key>, .tiket/<key>.log
    setting: ClassVar[str]  # Settings attribute holding the URL
    env_var: ClassVar[str]  # the variable that overrides it
    packages: ClassVar[dict[str, str]]  # package manager -> package name
    start_timeout: ClassVar[float] = 30.0
    start_note: ClassVar[str] = ""  # shown before a slow start
    pid_file: ClassVar[str]  # in the data dir while the private instance runs

    def url(self, settings: Settings) -> str:
        return getattr(settings, self.setting)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @abstractmethod
    def find_binaries(self) -> dict[str, str] | None:
        """Program name -> path, or None when something is missing."""

    @abstractmethod
    def start(self, inst: PrivateInstance) -> None:
        """Launch the server for `inst` (its data dir and log's parent exist)."""

    @abstractmethod
    def stop(self, inst: PrivateInstance) -> None:
        """Ask the server to stop cleanly and wait for it."""


class PostgreSQL(Dependency):
    title = "PostgreSQL"
    key = "postgres"
    setting = "postgres_url"
    env_var = "TIKET_POSTGRES_URL"
    packages: ClassVar[dict[str, str]] = {
        "apt": "postgresql",
        "dnf": "postgresql-server",
        "brew": "postgresql@16",
    }
    pid_file = "postmaster.pid"
    OS_USER = "postgres"

    def find_binaries(self) -> dict[str, str] | None:
        def version(path: str) -> tuple[int, ...]:
            name = Path(path).parent.name
            return tuple(int(p) for p in name.split(".") if p.isdigit())

        for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
            bins = {p: str(Path(bindir, p)) for p in ("initdb", "pg_ctl")}
            if all(os.access(b, os.X_OK) for b in bins.values()):
                return bins
        return _which("initdb", "pg_ctl")

    def start(self, inst: PrivateInstance) -> None:
        run_as = self._run_as()
        if run_as:  # root: initdb/postgres refuse to run as root, so they run as `postgres`
            self._hand_over(inst, run_as)
        if not (inst.data_dir / "PG_VERSION").exists():
            _run(
                [
                    *run_as,
                    inst.bins["initdb"],
                    "-D",
                    str(inst.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-locale",
                    "-E",
                    "UTF8",
                ],
                what=f"initdb of {_show(inst.data_dir)}",
            )
        socket_dir = str(inst.data_dir)
        if len(socket_dir) + len("/.s.PGSQL.65535.lock") >= 107:  # sun_path limit
            socket_dir = ""  # TCP only
        options = (
            f"-p {inst.port} -k {shlex.quote(socket_dir)} "
            f"-c listen_addresses={shlex.quote(inst.host)}"
        )
        _run(
            [
                *run_as,
                inst.bins["pg_ctl"],
                "-D",
                str(inst.data_dir),
                "-l",
                str(inst.log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(self.start_timeout)),
                "start",
            ],
            what="pg_ctl start",
            log=inst.log,
        )

    def stop(self, inst: PrivateInstance) -> None:
        _run(
            [
                *self._run_as(),
                inst.bins["pg_ctl"],
                "-D",
                str(inst.data_dir),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            what="pg_ctl stop",
            log=inst.log,
            timeout=STOP_TIMEOUT,
        )

    def _hand_over(self, inst: PrivateInstance, run_as: list[str]) -> None:
        """Give the data dir and log to the `postgres` user and check it can reach them."""
        user = pwd.getpwnam(self.OS_USER)
        if inst.data_dir.stat().st_uid != user.pw_uid:  # new, or left by another user
            for root, dirs, files in os.walk(inst.data_dir):
                for name in (".", *dirs, *files):
                    os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
        os.chown(inst.log, user.pw_uid, user.pw_gid)
        inst.data_dir.chmod(0o700)
        if _run([*run_as, "test", "-w", str(inst.data_dir)], check=False) != 0:
            raise InfraError(
                f"the `{self.OS_USER}` OS user cannot reach {_show(inst.data_dir)} (a parent "
                "directory is not searchable by others): use a state directory it can "
                "reach (TIKET_STATE_DIR), or run as a non-root user"
            )

    def _run_as(self) -> list[str]:
        """Command prefix that runs a program as the `postgres` user when we are root."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(self.OS_USER)
        except KeyError:
            raise InfraError(
                "PostgreSQL refuses to run as root and there is no `postgres` OS user: run "
                "`tiket up` as a normal user, or create one (useradd --system postgres)"
            ) from None
        if runuser := shutil.which("runuser"):
            return [runuser, "-u", self.OS_USER, "--"]
        if setpriv := shutil.which("setpriv"):
            return [setpriv, "--reuid", self.OS_USER, "--regid", self.OS_USER, "--init-groups"]
        raise InfraError(
            "PostgreSQL refuses to run as root and neither runuser nor setpriv was found: "
            "run `tiket up` as a normal user"
        )


class Redis(Dependency):
    title = "Redis"
    key = "redis"
    setting = "redis_url"
    env_var = "TIKET_REDIS_URL"
    packages: ClassVar[dict[str, str]] = {"apt": "redis-server", "dnf": "redis", "brew": "redis"}
    pid_file = "redis.pid"

    def find_binaries(self) -> dict[str, str] | None:
        return _which("redis-server", "redis-cli")

    def start(self, inst: PrivateInstance) -> None:
        _run(
            [
                inst.bins["redis-server"],
                "--port",
                str(inst.port),
                "--bind",
                inst.host,
                "--daemonize",
                "yes",
                "--dir",
                str(inst.data_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(inst.log),
                "--pidfile",
                str(inst.data_dir / "redis.pid"),
            ],
            what="redis-server",
            log=inst.log,
        )

    def stop(self, inst: PrivateInstance) -> None:
        _run(
            [inst.bins["redis-cli"], "-h", inst.host, "-p", str(inst.port), "shutdown", "nosave"],
            what="redis-cli shutdown",
            log=inst.log,
            timeout=STOP_TIMEOUT,
        )


class RabbitMQ(Dependency):
    title = "RabbitMQ"
    key = "rabbitmq"
    setting = "amqp_url"
    env_var = "TIKET_AMQP_URL"
    packages: ClassVar[dict[str, str]] = {
        "apt": "rabbitmq-server",
        "dnf": "rabbitmq-server",
        "brew": "rabbitmq",
    }
    pid_file = "rabbitmq.pid"
    start_timeout = 60.0
    start_note = "this takes 10-20 s"
    # Debian's /usr/sbin wrappers `su` to the rabbitmq user; the real scripts run as anyone.
    DEBIAN_BIN = "/usr/lib/rabbitmq/bin"

    def find_binaries(self) -> dict[str, str] | None:
        names = ("rabbitmq-server", "rabbitmqctl")
        bins = {n: str(Path(self.DEBIAN_BIN, n)) for n in names}
        if all(os.access(b, os.X_OK) for b in bins.values()):
            return bins
        return _which(*names)

    def start(self, inst: PrivateInstance) -> None:
        listener = f"[{inst.host}]" if ":" in inst.host else inst.host
        (inst.data_dir / "rabbitmq.conf").write_text(f"listeners.tcp.1 = {listener}:{inst.port}\n")
        (inst.data_dir / "enabled_plugins").write_text("[].\n")
        (inst.data_dir / "rabbitmq-env.conf").write_text("")
        with inst.log.open("ab") as log:
            inst.process = subprocess.Popen(
                [inst.bins["rabbitmq-server"]],
                env=self._env(inst),
                cwd=inst.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C of `tiket up` must not reach it
            )

    def stop(self, inst: PrivateInstance) -> None:
        # With the pid file, rabbitmqctl waits for the node to exit (forever if it never ran).
        pid_file = inst.data_dir / self.pid_file
        wait_for = [str(pid_file)] if _read_pid(pid_file) is not None else []
        _run(
            [inst.bins["rabbitmqctl"], "-n", self.node(inst), "stop", *wait_for],
            env=self._env(inst),
            what="rabbitmqctl stop",
            log=inst.log,
            timeout=STOP_TIMEOUT,
        )

    @staticmethod
    def node(inst: PrivateInstance) -> str:
        return f"tiket-{inst.port}@localhost"

    def _env(self, inst: PrivateInstance) -> dict[str, str]:
        """Everything under the data dir; nothing read from /etc/rabbitmq."""
        d = inst.data_dir
        # Distribution port away from the shared node's 25672 (PORT+20000 when that fits).
        dist = inst.port + 20000 if inst.port + 20000 <= 65535 else inst.port - 20000
        erl_args = os.environ.get("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "")
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        return {
            **os.environ,
            "HOME": str(d),  # the Erlang cookie lives here, for the server and rabbitmqctl
            "RABBITMQ_NODENAME": self.node(inst),
            "RABBITMQ_NODE_IP_ADDRESS": inst.host,
            "RABBITMQ_NODE_PORT": str(inst.port),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_LOGS": "-",  # to stdout, i.e. inst.log
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"{erl_args} {loopback_dist}".strip(),
        }


DEPENDENCIES: tuple[Dependency, ...] = (PostgreSQL(), Redis(), RabbitMQ())


def ensure_dependencies(
    settings: Settings,
    state_dir: Path = DEFAULT_STATE_DIR,
    out: Out = print,
    dependencies: Sequence[Dependency] = DEPENDENCIES,
) -> list[PrivateInstance]:
    """Start a private instance of each dependency that does not answer; return those started.

    Raises InfraError (with what to do) when one cannot be started; anything already started
    by this call is stopped first.
    """
    missing = [d for d in dependencies if not probe(d.url(settings))]
    remote = [d for d in missing if endpoint(d.url(settings))[0] not in LOCAL_HOSTS]
    if remote:
        raise InfraError("\n".join(_remote_error(d, settings) for d in remote))
    started: list[PrivateInstance] = []
    installer = _Installer(out)
    try:
        for dep in missing:
            inst = _start_private(dep, settings, state_dir, installer, out)
            if inst is not None:
                started.append(inst)
    except BaseException:
        stop_private(started, out=out)
        raise
    return started


def stop_private(
    instances: Iterable[PrivateInstance], out: Out = print, timeout: float = 30.0
) -> None:
    """Stop private instances cleanly (in reverse start order); force them only if that fails."""
    for inst in reversed([i for i in instances if not i.stopped]):
        inst.stopped = True
        try:
            inst.dependency.stop(inst)
        except (InfraError, OSError, subprocess.SubprocessError) as exc:
            out(f"stopping the private {inst.name} failed: {exc}")
        if not _wait(lambda i=inst: not _answers(i.host, i.port), timeout):
            out(f"private {inst.name} at {inst.address} still answers; killing it")
            _kill(inst)
        if inst.process is not None:
            try:
                inst.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(inst)


def running_private(
    settings: Settings,
    state_dir: Path = DEFAULT_STATE_DIR,
    dependencies: Sequence[Dependency] = DEPENDENCIES,
) -> list[PrivateInstance]:
    """Private instances left running under `state_dir` by an earlier run (for `tiket down`)."""
    found = []
    for dep in dependencies:
        host, port = endpoint(dep.url(settings))
        data_dir = state_dir.absolute() / dep.key
        bins = dep.find_binaries()
        if (
            host in LOCAL_HOSTS
            and bins is not None
            and _read_pid(data_dir / dep.pid_file) is not None
            and probe(dep.url(settings))
        ):
            log = data_dir.parent / f"{dep.key}.log"
            found.append(PrivateInstance(dep, _listen_host(host), port, data_dir, log, bins))
    return found


# --- internals -------------------------------------------------------------------------


def _start_private(
    dep: Dependency, settings: Settings, state_dir: Path, installer: _Installer, out: Out
) -> PrivateInstance | None:
    """Start `dep` under `state_dir`; None when installing it made the configured one answer."""
    url = dep.url(settings)
    host, port = endpoint(url)
    bins = dep.find_binaries()
    if bins is None:
        installer.install(dep)
        if probe(url):  # the package's own service may now be running there
            out(f"{dep.title} answers at {_hostport(host, port)} after installing it")
            return None
        bins = dep.find_binaries()
        if bins is None:
            raise InfraError(f"{dep.title} was installed but its programs were not found")
    state_dir = state_dir.absolute()
    data_dir = state_dir / dep.key
    data_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / f"{dep.key}.log"
    log.touch()
    inst = PrivateInstance(dep, _listen_host(host), port, data_dir, log, bins)
    what = f"{dep.title} did not answer at {_hostport(host, port)}"
    if dep.start_note:
        out(f"{what}: starting a private instance in {_show(data_dir)} ({dep.start_note})")
    began = time.monotonic()
    try:
        dep.start(inst)
        _wait_until_up(inst, dep.start_timeout)
    except BaseException:
        stop_private([inst], out=lambda _msg: None, timeout=10)
        raise
    took = time.monotonic() - began
    out(
        f"{what}: started a private instance in {_show(data_dir)} (log: {_show(log)}, {took:.1f} s)"
    )
    return inst


def _wait_until_up(inst: PrivateInstance, timeout: float) -> None:
    def up() -> bool:
        if inst.process is not None and inst.process.poll() is not None:
            raise InfraError(
                f"the private {inst.name} exited (code {inst.process.returncode}) before "
                f"answering at {inst.address}; see {_show(inst.log)}{_tail(inst.log)}"
            )
        return _answers(inst.host, inst.port, 0.5)

    if not _wait(up, timeout):
        raise InfraError(
            f"the private {inst.name} did not answer at {inst.address} within {timeout:.0f} s; "
            f"see {_show(inst.log)}{_tail(inst.log)}"
        )


class _Installer:
    """Installs a dependency's package when possible (apt-get update runs once)."""

    def __init__(self, out: Out) -> None:
        self.out = out
        self.apt_updated = False

    def install(self, dep: Dependency) -> None:
        manager = _package_manager()
        package = dep.packages.get(manager or "apt", dep.packages["apt"])
        if manager == "apt" and os.geteuid() == 0 and shutil.which("apt-get"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            self.out(f"{dep.title} is not installed: installing {package} with apt-get")
            if not self.apt_updated:
                _run(["apt-get", "update"], env=env, what="apt-get update", quiet=False)
                self.apt_updated = True
            _run(
                ["apt-get", "install", "-y", package],
                env=env,
                what=f"apt-get install {package}",
                quiet=False,
            )
            return
        command = {
            "apt": f"sudo apt-get install -y {package}",
            "dnf": f"sudo dnf install -y {package}",
            "brew": f"brew install {package}",
        }.get(manager or "")
        how = (
            f"install it with: {command}"
            if command
            else f"install {package} with your system's package manager"
        )
        raise InfraError(f"{dep.title} is not installed and no server answers: {how}")


def _package_manager() -> str | None:
    if platform.system() == "Darwin":
        return "brew"
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    ids = {fields.get("ID", "").strip('"').lower()}
    ids |= set(fields.get("ID_LIKE", "").strip('"').lower().split())
    if ids & {"debian", "ubuntu"}:
        return "apt"
    if ids & {"fedora", "rhel", "centos"}:
        return "dnf"
    return None


def _remote_error(dep: Dependency, settings: Settings) -> str:
    host, port = endpoint(dep.url(settings))
    return (
        f"{dep.title} did not answer at {_hostport(host, port)} ({dep.env_var}): start it "
        f"there or set {dep.env_var} to one that runs (private instances are only started "
        "for 127.0.0.1/localhost)"
    )


def _run(
    cmd: Sequence[str],
    *,
    what: str = "",
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    quiet: bool = True,
    timeout: float | None = None,
) -> int:
    """Run a command from / (so a dropped-privilege user can run it); InfraError on failure.

    Output goes to a temporary file, not a pipe: a daemon the command leaves behind must not
    keep us waiting for end-of-file.
    """
    with tempfile.TemporaryFile() as output:
        try:
            code = subprocess.run(
                list(cmd),
                cwd="/",
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=output if quiet else None,
                stderr=subprocess.STDOUT if quiet else None,
                check=False,
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
        output.seek(0)
        text = output.read().decode(errors="replace").strip()
    if check and code != 0:
        detail = f": {text[-800:]}" if text else ""
        see = f" (see {_show(log)})" if log else ""
        failed = f"timed out after {timeout:.0f} s" if code is None else f"failed with code {code}"
        raise InfraError(f"{what or cmd[0]} {failed}{see}{detail}")
    return -1 if code is None else code


def _which(*names: str) -> dict[str, str] | None:
    extra = os.pathsep.join(("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"))
    path = os.pathsep.join((os.environ.get("PATH", ""), extra))
    found = {n: shutil.which(n, path=path) for n in names}
    return None if None in found.values() else found  # type: ignore[return-value]


def _answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _kill(inst: PrivateInstance) -> None:
    """Last resort: SIGKILL the process (group) we started, or the one in the pid file."""
    pids = []
    if inst.process is not None and inst.process.poll() is None:
        pids.append(inst.process.pid)
    if (pid := _read_pid(inst.data_dir / inst.dependency.pid_file)) is not None:
        pids.append(pid)
    for pid in pids:
        try:
            if inst.process is not None and pid == inst.process.pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if inst.process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            inst.process.wait(timeout=5)


def _read_pid(path: Path) -> int | None:
    """The pid in `path` when that process is alive, else None."""
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n  " + "\n  ".join(text) if text else ""


def _listen_host(host: str) -> str:
    """Where a private instance for a local `host` listens."""
    return "::1" if host == "::1" else "127.0.0.1"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _show(path: Path) -> str:
    """`path` relative to the current directory when it is under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
