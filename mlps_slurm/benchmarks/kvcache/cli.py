"""Commands the kv-cache benchmark adds to the CLI: `mlps-slurm datasize kvcache`."""

from __future__ import annotations

import click

from mlps_slurm.benchmarks.kvcache import catalog as cat
from mlps_slurm.benchmarks.kvcache.plan import MAX_CONTEXT_TOKENS

GIB = 1 << 30


@click.command("kvcache")
@click.option("--ranks", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Clients (ranks) that share the cache filesystem.")
def datasize_kvcache(ranks: int) -> None:
    """Bytes per token and per entry of each model (from the model's layers, KV heads and head size, not
    mlpstorage's inline table), and the cache capacity each option's clients can touch."""
    click.echo(f"{'model':<24}{'bytes/token':>12}{'min entry':>12}{'max entry':>12}   shape per entry")
    smallest = min(t.context_range[0] for t in cat.USER_TEMPLATES.values())
    for name, m in cat.MODELS.items():
        click.echo(f"{name:<24}{m.bytes_per_token:>12,}{smallest * m.bytes_per_token / GIB:>10.3f} G"
                   f"{MAX_CONTEXT_TOKENS * m.bytes_per_token / GIB:>10.3f} G   {m.entry_shape(1)} per token")
    click.echo("")
    click.echo(f"option  model                  users  largest entry  all users' largest entries x {ranks} rank(s)")
    for number, p in cat.OPTIONS.items():
        per_entry = MAX_CONTEXT_TOKENS * cat.MODELS[p.model].bytes_per_token
        click.echo(f"{number:<8}{p.model:<23}{p.num_users:>5}{per_entry / GIB:>12.2f} GiB"
                   f"{per_entry * p.num_users * ranks / GIB:>14.1f} GiB")
    click.echo(f"  entries: {smallest:,}..{MAX_CONTEXT_TOKENS:,} context tokens (the user templates); each is one "
               ".npy file; the storage tier of a rank is 95 % of the free space at start / ranks sharing it")


COMMANDS = {"datasize": [datasize_kvcache]}
