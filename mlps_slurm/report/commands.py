"""`mlps-slurm report`: the work behind the click command of cli/report.py.

`-o NAME.html` writes the page and its PNGs in `NAME_files/` beside it; `-o NAME.png` writes every figure as a panel
of one PNG. Everything is written into a hidden temporary directory beside the output, then renamed into place (the
figures first, the page last), so a reader never sees a half-written report; an existing report is replaced only
with --force. Exit status: 0 written, 2 bad input (an unknown or unfinished run or schedule, an output that exists,
matplotlib missing), with one `mlps-slurm: error:` line naming the path and the cause.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from mlps_slurm.report.collect import Report, ReportError, run_report, schedule_report

EXIT_OK, EXIT_USAGE = 0, 2
Echo = Callable[[str], None]


def files_dir(output: Path) -> Path:
    """Where the page's PNGs go: report.html -> report_files/."""
    return output.with_name(f"{output.stem}_files")


def _tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlps-slurm")
    except PackageNotFoundError:
        return "(not installed)"


def _check_output(output: Path, force: bool) -> None:
    if output.suffix.lower() not in (".html", ".png"):
        raise ReportError(f"-o {output}: name the report NAME.html (a page with its PNGs in NAME_files/) or "
                          "NAME.png (every figure in one image)")
    if not output.parent.is_dir():
        raise ReportError(f"{output.parent}: no such directory for the report; create it first")
    taken = [p for p in (output, files_dir(output)) if p.exists() or p.is_symlink()]
    if output.suffix.lower() == ".png":
        taken = taken[:1] if output.exists() or output.is_symlink() else []
    if taken and not force:
        raise ReportError(f"{taken[0]}: already exists; give --force to replace the report, or another -o")
    for p in taken:
        if p.is_symlink() or (p == output and p.is_dir()) or (p != output and not p.is_dir()):
            raise ReportError(f"{p}: is {'a symbolic link' if p.is_symlink() else 'not what a report writes'}; "
                              "remove it yourself or give another -o")


def _resolve(target: str, profile_ref: str, overrides: Sequence[str], db: str | None, state_dir: str | None) -> Report:
    from mlps_slurm.history import compare_to_baseline, default_db
    from mlps_slurm.history.store import HistoryError
    from mlps_slurm.profile import load_profile
    from mlps_slurm.rundir import resolve_run
    from mlps_slurm.schedule import NAME, SPEC, load, read_log, schedule_dir, state_dir as default_state

    profile = load_profile(profile_ref, list(overrides))
    root = Path(profile.get("storage.results_dir"))
    try:
        return run_report(resolve_run(target, root).path)
    except FileNotFoundError as exc:
        missing = str(exc)
    state = Path(state_dir) if state_dir else default_state()
    if not NAME.fullmatch(target) or not (schedule_dir(state, target) / SPEC).is_file():
        raise ReportError(f"{target[:200]!r}: {missing}, and no schedule of that name in {state / 'schedules'} "
                          "(`mlps-slurm status` lists recent runs, `mlps-slurm schedule list` the schedules)")
    spec = load(state, target)
    where = Path(db) if db else Path(spec.history_db) if spec.history_db else default_db(profile)

    def judge(row: Any) -> dict[str, str]:
        try:
            verdicts, _ = compare_to_baseline(where, row.run_id, spec.baseline)
        except HistoryError:
            return {}
        return {v.name: v.verdict for v in verdicts if v.verdict in ("regression", "improvement")}

    return schedule_report(target, read_log(state, target), where, judge)


def _write(report: Report, output: Path, force: bool) -> int:
    from mlps_slurm.report import draw, page
    from mlps_slurm.report.figures import slug

    figures = report.figures()
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        if output.suffix.lower() == ".png":
            draw.save_sheet(figures, tmp / "report.png", report.title)
            os.replace(tmp / "report.png", output)
            return len(figures)
        folder = files_dir(output)
        (tmp / folder.name).mkdir()
        files: dict[str, str] = {}
        for i, f in enumerate(figures, 1):
            name = f"{i:02d}-{slug(f.name, 80)}.png"
            draw.save(f, tmp / folder.name / name)
            files[f.name] = f"{folder.name}/{name}"
        (tmp / output.name).write_text(page.render(report, files, _tool_version()), encoding="utf-8")
        for p in (tmp / folder.name, *(tmp / folder.name).iterdir(), tmp / output.name):
            p.chmod(0o755 if p.is_dir() else 0o644)  # mkdtemp's 0700 would hide the figures from a shared web dir
        if folder.is_dir() and force:
            os.rename(folder, tmp / ".old")
        os.rename(tmp / folder.name, folder)
        os.replace(tmp / output.name, output)
        return len(figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report_command(target: str, output: str, force: bool, profile_ref: str, overrides: Sequence[str],
                   db: str | None, state_dir: str | None, echo: Echo, err: Echo) -> int:
    from mlps_slurm.history.store import HistoryError
    from mlps_slurm.profile import ProfileError
    from mlps_slurm.report.draw import PlotsMissing, require
    from mlps_slurm.schedule import ScheduleError

    out = Path(output)
    try:
        _check_output(out, force)
        require()
        report = _resolve(target, profile_ref, overrides, db, state_dir)
        count = _write(report, out, force)
    except (ReportError, PlotsMissing, HistoryError, ProfileError, ScheduleError, PermissionError) as exc:
        err(f"mlps-slurm: error: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        err(f"mlps-slurm: error: {exc.filename or out}: cannot write the report ({exc.strerror or exc})")
        return EXIT_USAGE
    for problem in report.problems:
        err(f"mlps-slurm: warning: left out: {problem}")
    where = f" and {count} figure(s) in {files_dir(out)}/" if out.suffix.lower() == ".html" else \
        f" ({count} figure(s))"
    echo(f"wrote {out}{where}")
    return EXIT_OK
