"""DLIO adapter: what the installed DLIO can do.

PyPI's dlio-benchmark 2.0.0 has no llama3 checkpoint workloads and no checkpoint read phase; those exist only in
newer DLIO builds (the argonne-lcf `mlperf_storage_v2.0` branch and the MLCommons DLIO fork). We probe the jobs'
interpreter rather than our own, because that is where the engine will run (mlps_slurm.probes runs PROBE_CODE
there: inside the image on container sites).
"""

from __future__ import annotations

# Runs inside the jobs' interpreter: where is dlio_benchmark, which version, which workload configs it ships.
PROBE_CODE = r"""
import importlib.util, importlib.metadata, json, os
spec = importlib.util.find_spec("dlio_benchmark")
out = {"installed": spec is not None}
if spec is not None:
    root = os.path.dirname(spec.origin)
    wl = os.path.join(root, "configs", "workload")
    out["version"] = importlib.metadata.version("dlio-benchmark")
    out["location"] = root
    out["workloads"] = sorted(f[:-5] for f in os.listdir(wl) if f.endswith(".yaml")) if os.path.isdir(wl) else []
print(json.dumps(out))
"""

INSTALL_HINT = ("install a DLIO build that has the MLPerf Storage llama3 checkpoint workloads with a read phase "
                "(the argonne-lcf/dlio_benchmark branch mlperf_storage_v2.0, or the MLCommons DLIO fork) into the "
                "jobs' Python, or use --engine builtin")


def problems(info: dict, python: str) -> list[str]:
    """What PROBE_CODE printed in the jobs' Python, as the reason --engine dlio cannot run there (always one:
    this version of mlps-slurm drives only the builtin engine, so even a capable DLIO is refused with that fix)."""
    if not info["installed"]:
        return [f"--engine dlio: dlio-benchmark is not installed for {python}; {INSTALL_HINT}"]
    llama = [w for w in info["workloads"] if w.startswith("llama")]
    if not llama:
        return [f"--engine dlio: the installed dlio-benchmark {info['version']} ({info['location']}) has no llama3 "
                f"checkpoint workloads and no checkpoint read phase; {INSTALL_HINT}"]
    return [f"--engine dlio: dlio-benchmark {info['version']} ships {', '.join(llama)}, but this version of "
            "mlps-slurm drives only the builtin checkpoint engine; use --engine builtin"]
