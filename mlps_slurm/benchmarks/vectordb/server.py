"""The embedded Milvus server of one job (runs inside the job, on its batch host, in the background).

`serve` starts the real Milvus standalone binary shipped in PyPI's `milvus` 2.3.5 wheel on the run's data directory
(the storage under test), with ports of its own and authorization on, sets a random password for root that only
this job knows (a 0600 file in the job's state directory, removed when the server stops), reports readiness in
state.json, then waits:
- SIGUSR1 (the job script's EXIT trap): stop the server, keep the data for the next job of the chain;
- SIGTERM/SIGINT (Slurm ends the job: scancel, time limit): stop the server and remove its data directory.
Stopping is by process group: SIGTERM, a grace period, then SIGKILL (the server has been seen to ignore SIGTERM for
more than 20 s). The server also gets SIGKILL if this supervisor dies (PR_SET_PDEATHSIG), so it never outlives the job.

The wheel's own wrapper (`milvus-server`) is not used: it cannot bind ports other than on loopback checks, leaves
the server orphaned on SIGTERM and extracts 246 MB of binaries into every data directory; here they are extracted
once per data root.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import lzma
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

MARKER = ".mlps-slurm-milvus"  # in a data directory this tool created: holds the run id
PORT_KEYS = ("etcd_port", "root_coord_port", "proxy_port", "proxy_internal_port", "query_coord_port",
             "query_node_port", "index_coord_port", "index_node_port", "data_coord_port", "data_node_port")
PORT_BLOCK = 16  # ports of one block: the 10 above, the metrics/health port, room to spare
STOP_GRACE_S = 3.0
STOP_SIGNAL = signal.SIGTERM  # SIGINT was tried: the same panic on stop, the same session wait
DEFAULT_PASSWORD = "Milvus"  # Milvus's initial root password, replaced right after start
PASSWORD_FILE = ".mlps-root-password"  # in the data directory: the password the next job's server starts with


class ServeError(RuntimeError):
    pass


def package_dir() -> Path:
    import milvus  # the embedded server's wheel: its data/ holds the binaries and the config template

    return Path(milvus.__file__).parent


def server_version() -> str:
    import milvus

    return str(getattr(milvus, "__version__", "unknown"))


def extract_binaries(root: Path) -> Path:
    """The wheel's lzma-packed binaries, extracted once into <root>/.milvus-<version>-<digest>/ (atomic rename;
    concurrent jobs race harmlessly)."""
    packed = sorted((package_dir() / "data" / "bin").glob("*.lzma"))
    if not packed:
        raise ServeError(f"{package_dir()}/data/bin has no packed binaries: reinstall milvus==2.3.5")
    digest = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size}" for p in packed).encode()).hexdigest()[:12]
    target = root / f".milvus-{server_version()}-{digest}"
    if (target / ".complete").is_file():
        return target
    tmp = root / f"{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for p in packed:
        out = tmp / p.name[:-len(".lzma")]
        with lzma.open(p) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.chmod(0o755)
    (tmp / ".complete").write_text("ok\n", encoding="utf-8")
    try:
        tmp.rename(target)
    except OSError:  # another job extracted it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / ".complete").is_file():
            raise
    return target


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Milvus's listeners do
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def choose_ports(base: int, spread: int, tries: int = 256) -> dict[str, int]:
    """A block of free ports from `base` + `spread` blocks upward (spread by run id, so the runs of two users on
    one node do not race for the same block)."""
    for i in range(tries):
        first = base + ((spread + i) % tries) * PORT_BLOCK
        if first + PORT_BLOCK > 65535:
            continue
        ports = list(range(first, first + len(PORT_KEYS) + 1))
        if all(_bindable(p) for p in ports):
            out = dict(zip(PORT_KEYS, ports))
            out["metrics_port"] = ports[-1]
            return out
    raise ServeError(f"no block of {len(PORT_KEYS) + 1} free ports from {base} upward on {socket.gethostname()}; "
                     "set vectordb.milvus.port_base to a free range")


_VAR = re.compile(r"\{\{\s*(\w+)\s*(?:\((\w+)\))?\s*(?::\s*([^}]*?))?\s*\}\}")


def render_config(template: str, values: dict[str, Any]) -> str:
    """The wheel's config template ({{ name(type): default }}) with our values; a name without a value or a
    default is an error (a newer wheel with a new setting must not start half-configured)."""
    def value(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3)
        if name in values:
            v = values[name]
            return str(v).lower() if isinstance(v, bool) else str(v)
        if default is None:
            raise ServeError(f"the Milvus config template needs {name!r}, which mlps-slurm does not set")
        return default.strip()

    return _VAR.sub(value, template)


# Settings the template holds as literals, by their dotted path. The session TTL: a stopped server's session stays
# in etcd until its lease expires, and the next job's server on the same data directory waits for that (30 s by
# default, measured 36 s per start); 10 s keeps a margin for a busy node's keep-alives.
OVERRIDES = {"common.session.ttl": "10"}


def set_literals(text: str, values: dict[str, str]) -> str:
    """Replace `key: value` lines of a YAML text by dotted path (block mappings indented by two spaces, as the
    template is); a path that is not found is an error, so a changed template cannot silently ignore one."""
    path: list[str] = []
    found = set()
    out = []
    for line in text.splitlines():
        m = re.match(r"^( *)([A-Za-z0-9_.\-]+):(.*)$", line)
        if m and not line.lstrip().startswith("#"):
            depth = len(m.group(1)) // 2
            path = path[:depth] + [m.group(2)]
            key = ".".join(path)
            if key in values:
                comment = m.group(3).split("#", 1)
                line = f"{m.group(1)}{m.group(2)}: {values[key]}" + (f" #{comment[1]}" if len(comment) > 1 else "")
                found.add(key)
        out.append(line)
    missing = set(values) - found
    if missing:
        raise ServeError(f"the Milvus config template has no {', '.join(sorted(missing))}")
    return "\n".join(out) + "\n"


def write_config(data_dir: Path, ports: dict[str, int]) -> None:
    logs, storage = data_dir / "logs", data_dir / "data"
    for d in (data_dir / "configs", logs, storage, data_dir / "run"):
        d.mkdir(parents=True, exist_ok=True)
    template = (package_dir() / "data" / "config.yaml.template").read_text(encoding="utf-8")
    values: dict[str, Any] = {k: v for k, v in ports.items() if k in PORT_KEYS}
    values.update(etcd_log_path=str(logs / "etcd.log"), etcd_data_dir=str(storage / "etcd.data"),
                  local_storage_dir=str(storage), rocksmq_data_dir=str(storage / "rocksmq"),
                  system_log_path=str(logs), authorization_enabled=True)
    text = set_literals(render_config(template, values), OVERRIDES)
    (data_dir / "configs" / "milvus.yaml").write_text(text, encoding="utf-8")
    shutil.copy(package_dir() / "data" / "glog.conf", data_dir / "configs" / "glog.conf")


def server_argv(bin_dir: Path, data_dir: Path) -> list[str]:
    """The server's command. Milvus 2.3.5 keeps its pid and server-id files in /run/milvus, else in /tmp/milvus
    (hard-coded): a user who is not root can write neither /run nor a /tmp/milvus another user created, and two
    servers would share the pid lock. So a non-root server runs in a user and mount namespace of its own whose /tmp
    is the run's data directory's tmp/ (its files stay the user's; the network is the node's)."""
    argv = [str(bin_dir / "milvus"), "run", "standalone"]
    if os.geteuid() == 0:
        return argv
    private_tmp = data_dir / "tmp"
    private_tmp.mkdir(exist_ok=True)
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"], capture_output=True,
                           text=True) if unshare else None
    if probe is None or probe.returncode != 0:
        why = "no unshare on PATH" if probe is None else (probe.stderr.strip() or f"exit {probe.returncode}")
        raise ServeError("the embedded Milvus server needs a writable /run/milvus or its own /tmp, and this node "
                         f"allows neither to user {os.geteuid()} (unprivileged user namespaces: {why}); ask the "
                         "admins for one, or use a site Milvus (vectordb.milvus.mode: external)")
    return [unshare, "--user", "--map-root-user", "--mount", "--", "sh", "-c", 'mount --bind "$0" /tmp && exec "$@"',
            str(private_tmp), *argv]


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def claim_data_dir(data_dir: Path, run_id: str) -> None:
    """Create the run's data directory, or reuse it when this run created it (the marker holds the run id)."""
    marker = data_dir / MARKER
    if data_dir.exists():
        if not marker.is_file() or marker.read_text(encoding="utf-8").strip() != run_id:
            raise ServeError(f"{data_dir} exists and is not run {run_id}'s Milvus data directory (no {MARKER} "
                             "with its id); refusing to use or remove it")
        return
    data_dir.mkdir(parents=True)
    marker.write_text(run_id + "\n", encoding="utf-8")


def remove_data_dir(data_dir: Path, run_id: str) -> bool:
    """Remove a data directory this tool created for `run_id`; anything else is left alone."""
    marker = data_dir / MARKER
    try:
        if marker.read_text(encoding="utf-8").strip() != run_id:
            return False
    except (OSError, UnicodeDecodeError):
        return False
    shutil.rmtree(data_dir, ignore_errors=True)
    return not data_dir.exists()


def _write_state(state_dir: Path, **state: Any) -> None:
    tmp = state_dir / f".state.json.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, state_dir / "state.json")


def _write_secret(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return b"OK" in resp.read()
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Supervisor:
    def __init__(self, data_dir: Path, run_id: str, state_dir: Path, port_base: int, start_timeout: float):
        self.data_dir, self.run_id, self.state_dir = data_dir, run_id, state_dir
        self.port_base, self.start_timeout = port_base, start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None
        self.ports: dict[str, int] = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stop_signal is None or signum != signal.SIGUSR1:  # TERM after USR1 still removes the data
            self.stop_signal = signum

    def start(self) -> str:
        claim_data_dir(self.data_dir, self.run_id)
        bin_dir = extract_binaries(self.data_dir.parent)
        # Every job of a run tries the same block first: a restarted server whose ports changed waits for its
        # predecessor's components at their old addresses (measured: 24.6 s to ready instead of 14.9 s).
        self.ports = choose_ports(self.port_base, zlib.crc32(self.run_id.encode()) % 64)
        write_config(self.data_dir, self.ports)
        env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(self.ports["metrics_port"]),
                   MILVUS_RUN_DIR=str(self.data_dir / "run"),
                   LD_LIBRARY_PATH=":".join(filter(None, [str(bin_dir), os.environ.get("LD_LIBRARY_PATH")])))
        log = open(self.data_dir / "logs" / "milvus.log", "ab")
        self.proc = subprocess.Popen(server_argv(bin_dir, self.data_dir), cwd=self.data_dir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while not _healthy(self.ports["metrics_port"]):
            if self.proc.poll() is not None:
                raise ServeError(f"the Milvus server exited with status {self.proc.returncode} while starting; "
                                 f"its log ends:\n{_log_tail(self.data_dir / 'logs' / 'milvus.log')}")
            if self.stop_signal is not None:
                raise ServeError("stopped while starting")
            if time.monotonic() > deadline:
                raise ServeError(f"the Milvus server was not healthy after {self.start_timeout:g} s "
                                 "(vectordb.milvus.start_timeout_s)")
            time.sleep(0.2)
        return self._set_password()

    def _set_password(self) -> str:
        """A new random root password for this job. The previous one (Milvus's default on a new data directory,
        else the last job's) is kept in the data directory, 0600, on the storage under test, never in the run
        directory; the data directory goes when the run ends."""
        from pymilvus import MilvusClient

        kept = self.data_dir / PASSWORD_FILE
        old = kept.read_text(encoding="utf-8").strip() if kept.is_file() else DEFAULT_PASSWORD
        password = secrets.token_urlsafe(24)
        uri = f"http://127.0.0.1:{self.ports['proxy_port']}"
        deadline = time.monotonic() + 60
        while True:  # healthz can answer a moment before the proxy takes credentials
            try:
                client = MilvusClient(uri=uri, token=f"root:{old}", timeout=10)
                client.update_password("root", old, password)
                client.close()
                break
            except Exception as exc:  # pymilvus raises its own and grpc's errors
                if "auth" in str(exc).lower() or time.monotonic() > deadline:
                    raise ServeError(f"could not set the server's password ({type(exc).__name__}"
                                     f"{': authentication refused' if 'auth' in str(exc).lower() else ''})") from None
                time.sleep(0.5)
        _write_secret(kept, password)
        return f"root:{password}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((STOP_SIGNAL, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.proc is not None:
            # The server's id file: outside its data directory, or in its private /tmp (server_argv).
            for run_dir in ("/run/milvus", "/tmp/milvus", str(self.data_dir / "tmp" / "milvus")):
                try:
                    os.unlink(f"{run_dir}/server_id_{self.proc.pid}")
                except OSError:
                    pass
        try:
            (self.state_dir / "token").unlink()
        except OSError:
            pass


def serve(data_dir: str, run_id: str, state_root: str, port_base: int, start_timeout: float) -> int:
    job = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    state_dir = Path(state_root) / job
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    sup = Supervisor(Path(data_dir), run_id, state_dir, port_base, start_timeout)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, sup._on_signal)
    base = {"host": socket.gethostname(), "data_dir": data_dir, "version": server_version(), "job": job}
    _write_state(state_dir, state="starting", **base)
    reason = None
    started = time.time()
    try:
        token = sup.start()
        _write_secret(state_dir / "token", token)
        _write_state(state_dir, state="ready", port=sup.ports["proxy_port"], pid=sup.proc.pid if sup.proc else None,
                     ports=sup.ports, started_at=started, ready_at=time.time(), **base)
        print(f"milvus server {server_version()} ready on {base['host']}:{sup.ports['proxy_port']} "
              f"(data {data_dir})", flush=True)
        while sup.stop_signal is None:
            if sup.proc is not None and sup.proc.poll() is not None:
                raise ServeError(f"the Milvus server exited with status {sup.proc.returncode}; its log ends:\n"
                                 f"{_log_tail(Path(data_dir) / 'logs' / 'milvus.log')}")
            time.sleep(0.2)
        _write_state(state_dir, state="stopping", **base)
    except (ServeError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"mlps-slurm vectordb serve: {exc}", file=sys.stderr, flush=True)
        _write_state(state_dir, state="failed", reason=reason, **base)
    finally:
        sup.stop()
    removed = False
    if sup.stop_signal in (signal.SIGTERM, signal.SIGINT):
        removed = remove_data_dir(Path(data_dir), run_id)
    if reason is None:
        _write_state(state_dir, state="stopped", data_removed=removed, **base)
    else:
        _write_state(state_dir, state="failed", reason=reason, data_removed=removed, **base)
    return 0 if reason is None else 1
