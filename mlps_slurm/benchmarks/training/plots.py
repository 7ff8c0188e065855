"""The figures of a training run's report (`mlps-slurm report`): accelerator utilization per run against the AU
threshold, AU per epoch when DLIO reported it, and the throughput of every run. Plain data
(mlps_slurm.report.figures); nothing here imports matplotlib."""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.report.figures import Figure, figure, number, rows, series


def _label(run: Mapping[str, Any], i: int) -> str:
    return str(run.get("name") if isinstance(run.get("name"), (str, int)) else f"{i:02d}")


def _by_role(runs: list[Mapping[str, Any]], key: str) -> list[Any]:
    """One series per role: the warm-up, the scored runs, and the runs the finalize could not use."""
    groups = (("scored", lambda r: r.get("role") == "scored" and r.get("usable")),
              ("warm-up (not scored)", lambda r: r.get("role") != "scored" and r.get("usable")),
              ("unusable", lambda r: not r.get("usable")))
    return [series(name, [(_label(r, i), r.get(key)) for i, r in enumerate(runs) if keep(r)])
            for name, keep in groups]


def figures(results: Mapping[str, Any]) -> list[Figure]:
    runs = rows(results.get("runs"))
    summary = results.get("summary") if isinstance(results.get("summary"), Mapping) else {}
    thresholds = [number(r.get("au_threshold_percent")) for r in runs] + [number(summary.get("au_threshold_percent"))]
    threshold = next((t for t in thresholds if t is not None), None)
    mean = number(summary.get("au_mean_percent"))
    order = tuple(_label(r, i) for i, r in enumerate(runs))
    notes = (f"mean AU of the scored runs: {mean:.2f} %",) if mean is not None else ()
    epochs = [series(f"run {_label(r, i)}", [(e + 1, v) for e, v in enumerate(r.get("au_per_epoch") or [])])
              for i, r in enumerate(runs) if isinstance(r.get("au_per_epoch"), list)]
    found = [
        figure("au-per-run", "Accelerator utilization per run",
               "AU (%) of each run: the share of the time the simulated accelerators computed rather than waited for "
               "data. The rules require every scored run at or above the threshold; the first run warms up and is "
               "not scored.", "AU %", _by_role(runs, "au_percent"), kind="bar", x_label="run",
               threshold=threshold, threshold_label=f"AU threshold {threshold:g} %" if threshold else "",
               notes=notes, categories=order),
        figure("au-per-epoch", "Accelerator utilization per epoch",
               "AU (%) of each epoch as DLIO reported it, one line per run.", "AU %", epochs, kind="line",
               x_label="epoch", threshold=threshold, threshold_label=f"AU threshold {threshold:g} %"
               if threshold else ""),
        figure("throughput-per-run", "Training throughput per run",
               "Samples per second DLIO processed in each run.", "samples/s",
               _by_role(runs, "throughput_samples_per_s"), kind="bar", x_label="run", categories=order),
        figure("bandwidth-per-run", "Read bandwidth per run",
               "DLIO's nominal MB/s (samples/s x configured record length) beside the measured MB/s (bytes the "
               "ranks read / training time), per run.", "MB/s",
               [series("DLIO (nominal)", [(_label(r, i), r.get("dlio_MB_per_s")) for i, r in enumerate(runs)]),
                series("measured", [(_label(r, i), r.get("measured_MB_per_s")) for i, r in enumerate(runs)])],
               kind="bar", x_label="run"),
    ]
    return [f for f in found if f is not None]
