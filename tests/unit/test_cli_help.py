"""Every option of every command says what it does in `--help`: an admin on a real site reads --help, not the code."""

from __future__ import annotations

import click

from mlps_slurm.cli.main import main


def commands(cmd: click.Command, path: tuple[str, ...]) -> list[tuple[str, click.Command]]:
    """The command and every subcommand below it, contributed ones included (BenchmarkGroup lists the registry's)."""
    found = [(" ".join(path), cmd)]
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=path[-1])
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{' '.join(path)} lists {name} but cannot load it"
            found += commands(sub, (*path, name))
    return found


def test_every_option_of_every_command_has_help():
    every = commands(main, ("mlps-slurm",))
    names = {name for name, _ in every}
    # The walk must reach the contributed and per-benchmark commands, or it would pass by seeing too little.
    assert {"mlps-slurm submit checkpointing", "mlps-slurm datasize training", "mlps-slurm profiles validate",
            "mlps-slurm history list"} <= names
    missing = [f"{name}: {'/'.join(p.opts)}" for name, cmd in every for p in cmd.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not missing, "options without help= (add a short help text):\n" + "\n".join(missing)


def test_help_texts_are_shown(cli):
    proc = cli("status", "--help")
    assert proc.returncode == 0 and "give up waiting after this many seconds" in proc.stdout
