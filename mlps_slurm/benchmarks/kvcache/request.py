"""What a user asks of the kv-cache benchmark: every option, its default and its range, in one place.

CLOSED runs options 1, 2 and 3 of Table KVCache-1, each 3 times, seed 42, 90 s between options; the other values
here exist for demos and tests and make the run OPEN (the rules say which and why).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlps_slurm.benchmarks.base import Request, option
from mlps_slurm.benchmarks.kvcache import catalog as cat

OPTION_CHOICES = tuple(str(o) for o in cat.OPTIONS)


@dataclass(frozen=True)
class KvCacheRequest(Request):
    benchmark = "kvcache"

    options: tuple[str, ...] = option(OPTION_CHOICES, "--option", multiple=True, choices=OPTION_CHOICES, metavar="N",
                                      help="Run only this option of Table KVCache-1 (repeatable; default: 1, 2 "
                                           "and 3, as CLOSED requires).")
    trials: int = option(cat.CLOSED_TRIALS, "--trials", min=1, max=100, suite="cli",
                         help="Trials of each option (CLOSED: 3).")
    duration: float | None = option(None, "--duration", min=1, max=86400, suite="cli",
                                    help="Seconds of each trial (default: the option's 300).")
    users: int | None = option(None, "--users", min=1, max=100000, suite="cli",
                               help="Users per rank (default: the option's 200/100/70).")
    seed: int = option(cat.CLOSED_SEED, "--seed", min=0, help="Seed base; rank N runs with seed + N (CLOSED: 42).")
    inter_option_delay: float = option(float(cat.INTER_OPTION_DELAY_S), "--inter-option-delay", min=0, max=3600,
                                       suite="cli",
                                       help="Seconds between two options (CLOSED: 90).")
    ranks_per_node: int = option(1, "--ranks-per-node", "-a", min=1,
                                 help="Clients (ranks) on each node; each runs the option's full user count.")
    nodes: int | None = option(None, "--nodes", "-N", min=1, help="Client nodes (default: the profile's nodes.count).")
    keep_cache: bool = option(False, "--keep-cache",
                              help="Leave each rank's cache files after its trial (the reference does; by default "
                                   "each rank removes its own, so repeated runs never fill the cache filesystem).")
    engine: str | None = option(None, "--engine", choices=("builtin", "official"),
                                help="builtin: mlps-slurm's engine (never CLOSED); official: the reference "
                                     "kv_cache_benchmark checkout at the profile's engines.kvcache.path (default: "
                                     "the profile's engines.kvcache.engine).")


REQUEST = KvCacheRequest
