"""Shared visibility by tokens (see the package docstring): which nodes a node looks for, writing and waiting for
tokens (node step), the verdicts from every node's view and removing the tokens (gather)."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

from mlps_slurm.steps.preflight.common import FAIL, PASS, WARN, Check, compact_nodes, make_check, natural_key

SHARED_TIMEOUT_S = 5.0
SHARED_NEIGHBOURS = 16
SHARD_SIZE = 64  # tokens per sub-directory: each node lists at most two small directories
TOKEN_DIR = ".mlps-preflight-"


def token_targets(nodes: list[str], index: int, k: int = SHARED_NEIGHBOURS) -> list[str]:
    """The nodes whose tokens node `index` looks for: all others, or its k ring successors."""
    n = len(nodes)
    if n - 1 <= k:
        return [x for i, x in enumerate(nodes) if i != index]
    return [nodes[(index + d) % n] for d in range(1, k + 1)]


def token_path(directory: str, job: str, nodes_index: dict[str, int], node: str) -> Path:
    return Path(directory) / f"{TOKEN_DIR}{job}" / f"{nodes_index[node] // SHARD_SIZE:05d}" / node


def write_token(path: Path, node: str) -> str | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fh.write(f"{node} {time.time():.6f}\n")
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def wait_for_tokens(wanted: dict[str, dict[str, Path]], timeout: float) -> tuple[dict[str, set[str]], float]:
    """Poll until every wanted token (dir id -> node -> path) is visible or the timeout passes.

    Lists each shard directory (opendir makes NFS revalidate the directory; a stat of a missing name could be
    answered from a cached negative lookup for up to acdirmax). Returns the nodes still missing per dir id.
    """
    missing = {sid: set(paths) for sid, paths in wanted.items()}
    started = time.monotonic()
    delay = 0.01
    while True:
        for sid, paths in wanted.items():
            shards: dict[Path, list[str]] = {}
            for node in missing[sid]:
                shards.setdefault(paths[node].parent, []).append(node)
            for shard, nodes in shards.items():
                try:
                    present = {entry.name for entry in os.scandir(shard)}
                except OSError:
                    continue
                missing[sid].difference_update(n for n in nodes if n in present)
        waited = time.monotonic() - started
        if not any(missing.values()) or waited >= timeout:
            return missing, waited
        time.sleep(min(delay, max(0.0, timeout - waited)))
        delay = min(delay * 2, 0.25)


def shared_dirs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Storage dirs that every node must see as one: results_dir always (the run directory lives there), the
    others when storage_shared; a dir's own `shared` key overrides both."""
    shared = bool(spec.get("storage_shared", True))
    return [d for d in spec.get("storage", [])
            if d.get("shared", d["id"] == "results_dir" or shared)]


def decide_shared(shared: dict[str, dict[str, Any]]) -> dict[str, list[Check]]:
    """Verdicts on shared visibility: node -> one storage.<id>.shared check per shared dir it reported.

    `shared`: node -> the "shared" section of its report index (targets as one string, k = their number,
    dirs: {id: {path, token, error, missing}}).
    """
    checks: dict[str, list[Check]] = {n: [] for n in shared}
    by_dir: dict[str, dict[str, dict[str, Any]]] = {}
    for node, section in shared.items():
        for sid, view in section.get("dirs", {}).items():
            by_dir.setdefault(sid, {})[node] = view
    for sid in sorted(by_dir):
        views = by_dir[sid]
        cid = f"storage.{sid}.shared"
        members = set()
        for node, view in views.items():
            reason = shared[node].get("skipped") or (None if view.get("token") else
                                                     f"cannot write a token into {view.get('path')}: "
                                                     f"{view.get('error')}")
            if reason:
                checks[node].append(make_check(cid, WARN, f"not tested on {node}: {reason}", path=view.get("path")))
            else:
                members.add(node)
        for node, check in _decide_dir(sid, views, {n: shared[n] for n in members}).items():
            checks[node].append(check)
    return checks


def _decide_dir(sid: str, views: dict[str, dict[str, Any]],
                members: dict[str, dict[str, Any]]) -> dict[str, Check]:
    cid = f"storage.{sid}.shared"
    everyone = len(members) == len(views)
    if everyone and not any(views[n]["missing"] for n in members):
        # The common case, kept cheap: every node wrote its token and saw all of its targets. Nodes with the same
        # path and neighbour count share one check object (gather encodes it once).
        out, made = {}, {}
        for n in members:
            key = (views[n]["path"], members[n]["k"])
            if key not in made:
                text = (f"sees the tokens of its {key[1]} neighbour(s) in {key[0]}, and they see its token"
                        if key[1] else f"single node: shared visibility of {key[0]} is not testable")
                made[key] = make_check(cid, PASS, text, path=key[0], targets=key[1], missing=[])
            out[n] = made[key]
        return out
    targets = {n: [t for t in s["targets"].split() if t in members] for n, s in members.items()}
    missed = {n: {m for m in views[n]["missing"] if m in members} for n in members}
    out = {}
    checkers: dict[str, list[str]] = {n: [] for n in members}
    missed_by: dict[str, list[str]] = {n: [] for n in members}
    for n in members:
        for t in targets[n]:
            checkers[t].append(n)
        for t in missed[n]:
            missed_by[t].append(n)
    # A node is at fault when its view disagrees with most of its neighbours, in either direction.
    faulty = {n for n in members
              if 2 * len(missed[n]) > len(targets[n]) or 2 * len(missed_by[n]) > len(checkers[n])}
    for n in members:
        path, timeout = views[n]["path"], members[n].get("timeout_s", SHARED_TIMEOUT_S)
        facts = {"path": path, "targets": len(targets[n]), "missing": sorted(missed[n], key=natural_key),
                 "not_seen_by": sorted(missed_by[n], key=natural_key)}
        if n in faulty:
            tie = " (with two nodes mlps-slurm cannot tell which one is wrong)" if len(members) == 2 else ""
            out[n] = make_check(cid, FAIL, (
                f"{path} on {n} is not the directory the other nodes see: {n} saw "
                f"{len(targets[n]) - len(missed[n])} of {len(targets[n])} other nodes' tokens and "
                f"{len(missed_by[n])} of {len(checkers[n])} nodes did not see {n}'s token within {timeout:g} s; it "
                f"is node-local or mounted differently on {n}{tie}; check `findmnt -T {path}` on {n}"), **facts)
        elif missed[n] - faulty:
            lost = compact_nodes(missed[n] - faulty)
            out[n] = make_check(cid, FAIL, (
                f"{n} does not see the tokens of {lost} in {path} within {timeout:g} s although other nodes do: "
                f"stale metadata caching (NFS actimeo/lookupcache) or a different mount on {n}; check its mount "
                "options or raise shared_token_timeout_s"), **facts)
        else:
            out[n] = make_check(cid, PASS, f"{n} and its neighbours see one {path}"
                                + (f" (apart from {compact_nodes(missed[n])})" if missed[n] else ""), **facts)
    return out


def cleanup_tokens(spec: dict[str, Any], job_id: str | None) -> None:
    """Remove this job's token directories (as seen from the batch host), shards in parallel: on a parallel
    filesystem each unlink is a metadata round trip. A node that saw a node-local directory keeps its token
    there (.mlps-preflight-<job>/), which only it can see."""
    if not job_id:
        return
    from concurrent.futures import ThreadPoolExecutor  # here: the node step never needs threads

    roots = [Path(d["path"]) / f"{TOKEN_DIR}{job_id}" for d in shared_dirs(spec)]
    shards = [entry.path for root in roots if root.is_dir() for entry in os.scandir(root)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda shard: shutil.rmtree(shard, ignore_errors=True), shards))
    for root in roots:
        try:
            root.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise
