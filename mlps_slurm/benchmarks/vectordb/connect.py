"""How a job-side command reaches Milvus: this job's embedded server (its state directory says where and when it
is ready; the token is a 0600 file there) or the site's external server (the token read from a file or an
environment variable, now). A token never appears in a message: errors name the URI only."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONNECT_TIMEOUT_S = 30.0


class MilvusUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoint:
    uri: str
    token: str | None
    db_name: str | None = None
    version_hint: str | None = None
    server_times: dict[str, float] | None = None  # embedded: when this job's server started and became ready

    def redact(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server-state-root", help="embedded: the state directories of the jobs' servers")
    parser.add_argument("--wait-timeout", type=float, default=360.0, help="embedded: seconds to wait for the server")
    parser.add_argument("--uri", help="external: the server")
    parser.add_argument("--token-file", help="external: the file holding the token")
    parser.add_argument("--token-env", help="external: the environment variable holding the token")
    parser.add_argument("--db-name")


def _embedded(root: str, timeout: float) -> Endpoint:
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        raise MilvusUnavailable("SLURM_JOB_ID is not set: the embedded server is found through its job")
    state_dir = Path(root) / job
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        if state.get("state") == "ready":
            break
        if state.get("state") in ("failed", "stopped", "stopping"):
            raise MilvusUnavailable(f"the job's embedded Milvus server {state.get('state')}: "
                                    f"{state.get('reason', 'see the job log')}")
        if time.monotonic() > deadline:
            raise MilvusUnavailable(f"the job's embedded Milvus server was not ready after {timeout:g} s "
                                    f"({state_dir / 'state.json'}: {state.get('state', 'absent')})")
        time.sleep(0.1)
    host = "127.0.0.1" if state.get("host") == socket.gethostname() else str(state.get("host"))
    try:
        token = (state_dir / "token").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise MilvusUnavailable(f"{state_dir / 'token'}: {exc.strerror or exc}") from None
    return Endpoint(f"http://{host}:{int(state['port'])}", token, None, state.get("version"),
                    {k: state[k] for k in ("started_at", "ready_at") if isinstance(state.get(k), (int, float))})


def _external(args: argparse.Namespace) -> Endpoint:
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise MilvusUnavailable(f"vectordb.milvus.token_file {args.token_file}: cannot read it "
                                    f"({getattr(exc, 'strerror', None) or exc})") from None
        if not token:
            raise MilvusUnavailable(f"vectordb.milvus.token_file {args.token_file} is empty; write the token "
                                    "(USER:PASSWORD or an API key) into it")
    elif args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise MilvusUnavailable(f"vectordb.milvus.token_env: ${args.token_env} is not set in the job's "
                                    "environment (export it before submitting; sbatch passes it on)")
    return Endpoint(args.uri, token, args.db_name)


def endpoint(args: argparse.Namespace) -> Endpoint:
    if args.server_state_root:
        return _embedded(args.server_state_root, args.wait_timeout)
    if not args.uri:
        raise MilvusUnavailable("neither --server-state-root nor --uri given")
    return _external(args)


def client(ep: Endpoint, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """A connected pymilvus MilvusClient; MilvusUnavailable (naming the URI, never the token) when it cannot
    connect."""
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its own error logs would repeat ours
    from pymilvus import MilvusClient

    kwargs: dict[str, Any] = {"uri": ep.uri, "timeout": timeout}
    if ep.token:
        kwargs["token"] = ep.token
    if ep.db_name:
        kwargs["db_name"] = ep.db_name
    try:
        return MilvusClient(**kwargs)
    except Exception as exc:  # pymilvus raises MilvusException, grpc errors and ValueError
        raise MilvusUnavailable(f"cannot reach Milvus at {ep.uri} within {timeout:g} s: "
                                f"{ep.redact(_message(exc))}") from None


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
