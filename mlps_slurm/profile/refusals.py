"""Which profile key an sbatch refusal is about.

sbatch names what it refused in its own words ("Invalid partition name specified") and `--test-only` runs on a
scratch copy of the script, so its answer alone sends a user to a file that no longer exists. This maps the words to
the option, and the option to the profile key that put it on the job's #SBATCH lines or sbatch command line.
"""

from __future__ import annotations

import re
from typing import Sequence

from mlps_slurm.profile.loader import SiteProfile
from mlps_slurm.profile.schema import JOB_KINDS

# sbatch's and slurmctld's words (Slurm 22.05 to 24.x) -> the options they may be about; first match wins.
_REFUSED: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"invalid partition", re.I), ("--partition",)),
    (re.compile(r"reservation", re.I), ("--reservation",)),
    (re.compile(r"invalid qos|qos", re.I), ("--qos",)),
    (re.compile(r"invalid account|account", re.I), ("--account",)),
    (re.compile(r"feature", re.I), ("--constraint",)),
    (re.compile(r"generic resource|gres", re.I), ("--gres",)),
    (re.compile(r"time limit|--time", re.I), ("--time",)),
    (re.compile(r"license", re.I), ("--licenses",)),
    # No single option: the partition has no nodes that satisfy the count, features, gres and exclusivity together.
    (re.compile(r"node configuration is not available|node count specification|more processors requested",
                re.I), ("--nodes", "--constraint", "--gres", "--exclusive")),
)

_SHORT = {"--partition": "-p", "--account": "-A", "--qos": "-q", "--constraint": "-C", "--time": "-t",
          "--nodes": "-N", "--licenses": "-L"}

# The keys sbatch_directives (plan.py) turns into each option; --partition and --time depend on the job's kind.
_KEYS = {"--account": ("slurm.account",), "--qos": ("slurm.qos",), "--reservation": ("slurm.reservation",),
         "--constraint": ("slurm.constraint",), "--gres": ("slurm.gres",), "--nodes": ("nodes.count",),
         "--exclusive": ("slurm.exclusive",), "--partition": ("slurm.partition",),
         "--time": tuple(f"slurm.time_limit.{kind}" for kind in JOB_KINDS), "--licenses": ()}

_FIX = {
    "--partition": "set it to a partition of this cluster (`sinfo -s` lists them)",
    "--account": "set it to an account you may charge (`sacctmgr show assoc user=$USER format=account`)",
    "--qos": "set it to a QoS of your association (`sacctmgr show assoc user=$USER format=qos`)",
    "--reservation": "set it to a reservation you may use (`scontrol show reservation`), or null",
    "--constraint": "use features the partition's nodes have (`sinfo -o '%P %f'`), or null",
    "--gres": "use generic resources the partition's nodes have (`sinfo -o '%P %G'`), or null",
    "--time": "lower it to the partition's MaxTime (`sinfo -o '%P %l'`)",
    "--licenses": "use licenses the cluster has (`scontrol show licenses`)",
    "--nodes": "the partition has no such nodes: compare nodes.count, slurm.constraint, slurm.gres and "
               "slurm.exclusive with `sinfo -o '%P %D %c %m %f %G'`",
}


def refusal_reason(stderr: str) -> str:
    """sbatch's refusal without its prefixes, one line."""
    lines = [re.sub(r"^(sbatch: error: |sbatch: |allocation failure: )", "", line.strip())
             for line in stderr.splitlines() if line.strip()]
    return "; ".join(dict.fromkeys(lines)) or "no reason given"


def _value(args: Sequence[str], option: str) -> str | None:
    """The last value `args` give the option (sbatch keeps the last), "" for a flag, None when absent."""
    short = _SHORT.get(option)
    found = None
    for i, arg in enumerate(args):
        if arg == option or (short and arg == short):
            found = args[i + 1] if i + 1 < len(args) and option != "--exclusive" else ""
        elif arg.startswith(option + "="):
            found = arg[len(option) + 1:]
        elif short and arg.startswith(short) and len(arg) > 2:
            found = arg[2:]
    return found


def option_sources(option: str, sbatch: Sequence[str], sbatch_args: Sequence[str],
                   profile: SiteProfile) -> tuple[list[str], str | None]:
    """The profile keys that set `option` on a job and the value it got. The command line beats the script, and the
    extra directives come after the profile's own, so the first of these that sets it is where it came from."""
    if _value(sbatch_args, option) is not None:
        return ["slurm.extra_sbatch_args"], _value(sbatch_args, option)
    if _value(profile.get("slurm.extra_directives"), option) is not None:
        return ["slurm.extra_directives"], _value(profile.get("slurm.extra_directives"), option)
    value = _value(sbatch, option)
    if option == "--partition":
        candidates = [f"slurm.partitions.{kind}" for kind in JOB_KINDS] + ["slurm.partition"]
    else:
        candidates = list(_KEYS.get(option, ()))
    if value is None:  # the option is not set: the key that would set it (the cluster's default partition, ...)
        return candidates[-1:] if option == "--partition" else [], None
    if option in ("--exclusive",):
        return candidates, value
    matching = [k for k in candidates if value and str(profile.get(k)) == value]
    return matching or candidates, value


def refusal(stderr: str, sbatch: Sequence[str], sbatch_args: Sequence[str],
            profile: SiteProfile) -> tuple[list[str], str]:
    """The profile key(s) to change (none when sbatch's words name no option) and a line saying which value
    sbatch refused, its reason and the fix."""
    reason = refusal_reason(stderr)
    options = next((opts for pattern, opts in _REFUSED if pattern.search(reason)), ())
    keys: list[str] = []
    shown: list[str] = []
    for option in options:
        found, value = option_sources(option, sbatch, sbatch_args, profile)
        if value is None and len(options) > 1:
            continue
        keys += [k for k in found if k not in keys]
        if value is not None:
            shown.append(f"{option}={value}" if value else option)
    if not options:
        return [], (f"sbatch refused the job: {reason}; its options come from the profile's slurm.* keys "
                    "(slurm.extra_directives and slurm.extra_sbatch_args included)")
    fix = _FIX.get(options[0], "fix the value")
    if not keys:
        return [], f"sbatch refused {options[0]}: {reason}; {fix}"
    what = ", ".join(shown) if shown else f"no {options[0]} (the cluster's default)"
    return keys, f"sbatch refused {what} ({reason}); {fix}"


def explain_refusal(stderr: str, sbatch: Sequence[str], sbatch_args: Sequence[str], profile: SiteProfile) -> str:
    """refusal()'s line, led by the key(s) to change."""
    keys, message = refusal(stderr, sbatch, sbatch_args, profile)
    return f"{' / '.join(keys)}: {message}" if keys else message
