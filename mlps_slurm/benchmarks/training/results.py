"""A training run directory as the rules' record (TrainingChain).

    manifest.json request and settings: benchmark "training", model, accelerator, num_accelerators, nodes,
                  client_memory_gb (GiB per host, optional), num_files_train, num_subfolders_train, param_values
                  (or params) {dlio key: value}, scale, data_dir, runs (planned run count, default 6)
    datasize.json (optional) the dataset size the datagen job settled (mlps_slurm.benchmarks.training.record)
    raw/training/<model>/datagen/datagen.json  {"num_files": int, "num_subfolders": int, "bytes": int}: what the
                  datagen step found on disk after generating
    raw/training/<model>/run/<NN>/summary.json DLIO's summary (one directory per run, NN = 00 warm-up .. 05)
    raw/training/<model>/run/<NN>/dlio_config/overrides.yaml  (optional) the Hydra overrides DLIO ran with
    preflight facts "storage": {"data_dir": ..., "results_dir": ...} decide storage.separate_filesystems

In a submission tree the run's own files are in datasize/<ts>/ and the raw leaves in datagen/<ts>/ and run/<ts>/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from mlps_slurm.benchmarks.training import rules as train
from mlps_slurm.benchmarks.training.record import SettledSizeError, training_record
from mlps_slurm.rules.common import RUN_MANIFEST, RUN_READABLE, separate_filesystems
from mlps_slurm.rules.core import parse_time
from mlps_slurm.rules.facts import client_memory
from mlps_slurm.rules.loaders import FileProblem, Loaded, fail, leaves, load_results, read_json_object, results_dir


def run_from_summary(name: str, summary: Mapping[str, Any]) -> train.TrainingRunResult:
    """Normalize a DLIO summary.json (keys: start, end, num_accelerators, num_hosts, host_memory_GB[],
    num_files_train, metric{train_au_mean_percentage, train_au_meet_expectation, ...})."""
    metric = summary.get("metric") if isinstance(summary.get("metric"), Mapping) else {}
    problems = []
    start, end = parse_time(summary.get("start")), parse_time(summary.get("end"))
    if start is None:
        problems.append(f"start is {summary.get('start')!r}, expected an ISO time")
    if end is None:
        problems.append(f"end is {summary.get('end')!r}, expected an ISO time (did the run finish?)")
    au = metric.get("train_au_mean_percentage")
    if isinstance(au, bool) or not isinstance(au, (int, float)):
        problems.append(f"metric.train_au_mean_percentage is {au!r}, expected a number")
        au = None
    mem = summary.get("host_memory_GB")
    mem_list = tuple(float(m) for m in mem if isinstance(m, (int, float))) if isinstance(mem, list) else ()

    def integer(key: str) -> int | None:
        v = summary.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def number(key: str) -> float | None:
        v = metric.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return train.TrainingRunResult(
        name=name, start=start, end=end, au_percent=None if au is None else float(au),
        au_meet_expectation=metric.get("train_au_meet_expectation"),
        num_accelerators=integer("num_accelerators"), num_hosts=integer("num_hosts"), host_memory_gb=mem_list,
        num_files_train=integer("num_files_train"),
        throughput_samples_per_s=number("train_throughput_mean_samples_per_second"),
        io_MB_per_s=number("train_io_mean_MB_per_second"),
        problem="; ".join(problems) or None)


def params_from_overrides(overrides: list[Any]) -> dict[str, str]:
    """DLIO/Hydra overrides (`++workload.reader.read_threads=8`, `workload=unet3d_b200`) -> workload key: value."""
    out = {}
    for item in overrides:
        text = str(item).lstrip("+")
        key, sep, value = text.partition("=")
        if not sep or not key.startswith("workload."):
            continue  # the workload name itself and hydra.* are the tool's, not parameter overrides
        out[key[len("workload."):]] = value
    return out


def _overrides(leaf: Path) -> dict[str, str]:
    for name in ("dlio_config/overrides.yaml", ".hydra/overrides.yaml"):
        path = leaf / name
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise FileProblem(f"{path}: not valid YAML: {exc}") from exc
            if not isinstance(data, list):
                raise FileProblem(f"{path}: expected a list of overrides, got {type(data).__name__}")
            return params_from_overrides(data)
    return {}


def _run(leaf: Path, params: dict[str, str]) -> train.TrainingRunResult:
    """One run leaf's result (its overrides go into `params`); an unreadable file is the result's problem."""
    try:
        summary = read_json_object(leaf / "summary.json")
        params.update(_overrides(leaf))
        result = run_from_summary(leaf.name, summary)
        if result.problem:
            result = train.TrainingRunResult(leaf.name, problem=f"{leaf / 'summary.json'}: {result.problem}")
    except FileProblem as exc:
        result = train.TrainingRunResult(leaf.name, problem=str(exc))
    return result


def load(root: Path, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Loaded:
    loaded = Loaded("training", str(manifest["request"].get("model")))
    try:
        request = training_record(root, manifest)
    except SettledSizeError as exc:
        fail(loaded, RUN_READABLE, str(exc))
        return loaded
    model = str(request.get("model"))
    load_results(root, loaded)
    datagen_leaves, run_leaves = leaves(root, f"raw/training/{model}")
    params: dict[str, str] = {}
    runs = []
    for leaf in run_leaves:
        result = _run(leaf, params)
        runs.append(result)
        if result.problem:
            loaded.problems.append(result.problem)
    planned = int(request.get("runs", train.REQUIRED_RUNS))
    if len(run_leaves) < planned:
        loaded.problems.append(f"{len(run_leaves)} of the {planned} planned runs left an output directory under "
                               f"{root}")
    datagen = None
    if datagen_leaves:
        path = datagen_leaves[0] / "datagen.json"
        try:
            d = read_json_object(path)
            datagen = train.TrainingDatagen(d.get("num_files"), d.get("num_subfolders"))
        except FileProblem as exc:
            datagen = train.TrainingDatagen(None, None, str(exc))
    memory = client_memory(preflight)
    try:  # preflight facts beat the declared memory: the smallest client bounds what can be cached
        plan = train.plan_from_request(request, params, min(memory.values()) / train.GIB if memory else None)
    except (KeyError, TypeError, ValueError) as exc:
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: request cannot be read as a training plan: "
                                   f"{type(exc).__name__}: {exc}")
        return loaded
    chain = train.TrainingChain(str(manifest.get("run_id")), plan, datagen, tuple(runs),
                                separate_filesystems(preflight, "data_dir", request.get("data_dir"), "results_dir",
                                                     results_dir(manifest)))
    loaded.record = chain
    usable = chain.usable_runs()
    scored = usable[1:]
    if usable and usable[0].start:
        loaded.started = usable[0].start.timestamp()
    if scored:
        au = [r.au_percent for r in scored if r.au_percent is not None]
        tput = [r.throughput_samples_per_s for r in scored if r.throughput_samples_per_s is not None]
        loaded.metrics = {"num_accelerators": plan.num_accelerators, "hosts": plan.num_hosts,
                          "scored_runs": len(scored), "au_mean_percent": sum(au) / len(au) if au else None,
                          "throughput_samples_per_s_mean": sum(tput) / len(tput) if tput else None}
    return loaded
