"""What a checkpointing run that did not finish leaves on the storage under test, tidied by its finalize.

A killed engine leaves ckpt_* directories behind: the checkpoints its journal records as complete (fsynced before
the journal line was written) and the one it was writing. The finalize removes the incomplete ones (partial data
nobody can use) and keeps the complete ones only because `mlps-slurm resume` reuses them; `--keep-files` keeps
everything. The directory comes from the run's manifest, which may be hostile: only `ckpt_<n>` entries directly in
a directory named after the run id are ever removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

_CKPT = re.compile(r"^ckpt_(\d+)$")


def complete_writes(journal: Path) -> int:
    """How many write checkpoints, from index 0 on, the journal records as complete (0 when it is unreadable)."""
    indexes = set()
    try:
        lines = journal.read_text(encoding="utf-8").splitlines()[1:]
    except (OSError, UnicodeDecodeError):
        return 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            break  # the line the kill cut short
        if isinstance(record, dict) and record.get("phase") == "write" and isinstance(record.get("index"), int):
            indexes.add(record["index"])
    count = 0
    while count in indexes:
        count += 1
    return count


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def remove_partial(checkpoint_dir: str, run_id: str, journal: Path, keep_files: bool,
                   shared: bool = True) -> dict[str, Any]:
    """Remove the incomplete ckpt_* directories of an unfinished run; report what was kept and removed."""
    directory = Path(checkpoint_dir)
    entry: dict[str, Any] = {"dir": checkpoint_dir, "kept": [], "removed": [], "bytes_kept": 0, "bytes_removed": 0}
    if keep_files:
        return {**entry, "skipped": "--keep-files: every checkpoint file was left in place"}
    if not directory.is_absolute() or ".." in directory.parts or directory.name != run_id:
        return {**entry, "skipped": "the manifest's checkpoint directory is not this run's; nothing was removed"}
    if not directory.is_dir() or directory.is_symlink():
        return {**entry, "skipped": "no checkpoint directory was left"}
    complete = complete_writes(journal)
    for child in sorted(directory.iterdir()):
        m = _CKPT.match(child.name)
        if not m or child.is_symlink() or not child.is_dir():
            continue
        size = _size(child)
        if int(m.group(1)) < complete:
            entry["kept"].append(child.name)
            entry["bytes_kept"] += size
            continue
        shutil.rmtree(child, ignore_errors=True)
        if not child.exists():
            entry["removed"].append(child.name)
            entry["bytes_removed"] += size
    if not shared:
        entry["note"] = "node-local storage (storage.shared: false): only the finalize's node was tidied"
    return entry


def cleanup_lines(entry: dict[str, Any] | None) -> list[str]:
    if not entry:
        return []
    if entry.get("skipped"):
        return [f"  note: checkpoint files in {entry['dir']}: {entry['skipped']}"]
    lines = []
    if entry["removed"]:
        lines.append(f"  note: removed {len(entry['removed'])} incomplete checkpoint(s) "
                     f"({entry['bytes_removed'] / 1e9:.2f} GB) from {entry['dir']}")
    if entry["kept"]:
        lines.append(f"  note: kept {len(entry['kept'])} complete checkpoint(s) ({entry['bytes_kept'] / 1e9:.2f} GB) "
                     f"in {entry['dir']} for `mlps-slurm resume`; remove the directory if you will not resume")
    if entry.get("note"):
        lines.append(f"  note: {entry['note']}")
    return lines


def tidy(run: Any) -> list[str]:
    """After `cancel` (every job ended): what remove_partial did for this run, as lines to print."""
    from mlps_slurm.benchmarks.checkpointing.journal import journal_path
    from mlps_slurm.rundir import run_record

    manifest = run.read_manifest()
    request = run_record(manifest)
    engine_output = Path(str(request.get("engine_output", "")))
    if not request.get("checkpoint_dir") or engine_output.is_file():
        return []  # never planned, or the engine finished and removed its own files
    entry = remove_partial(str(request["checkpoint_dir"]), str(manifest.get("run_id")), journal_path(engine_output),
                           bool(request.get("keep_files")),
                           bool((manifest.get("preflight") or {}).get("storage_shared", True)))
    return [line.strip().removeprefix("note: ") for line in cleanup_lines(entry)]
