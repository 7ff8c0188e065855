"""nodes.memory_gb and --client-memory-gb are GiB (2^30 bytes), as MLPerf's datasize rule counts its "GB":
min_samples >= hosts x mem x 5 x 2^30 / record_length. Every help text and message says GiB for them."""

from __future__ import annotations

import math

from mlps_slurm.benchmarks.training import catalog as cat
from mlps_slurm.profile.schema import SCHEMA
from mlps_slurm.steps.preflight import system

GIB = 1 << 30


def test_the_profile_key_documents_gib():
    doc = SCHEMA["nodes.memory_gb"].doc
    assert "GiB (2^30 bytes" in doc and " GB" not in doc


def test_datasize_reads_the_profiles_memory_as_gib(cli):
    # unet3d on b200, 1 host x 128 GiB: 128 x 5 x 2^30 / 146,600,628 B = 4,687.5 -> 4,688 files; reading the value
    # as decimal GB would give 4,366 files, a dataset 7% smaller than the rules require.
    record = cat.workload("unet3d", "b200").record_length
    assert math.ceil(128 * 5 * GIB / record) == 4688
    proc = cli("datasize", "training", "--model", "unet3d", "--accelerator", "b200", "-a", "1", "-N", "1",
               "-o", "nodes.memory_gb=128")
    assert proc.returncode == 0, proc.stderr
    assert "128 GiB per node (profile localhost: nodes.memory_gb)" in proc.stdout
    assert "files:            4,688 x 1 sample(s)" in proc.stdout and "decided by:       memory" in proc.stdout
    options = cli("datasize", "training", "--help").stdout
    assert "--client-memory-gb GIB" in options and "Memory per client node in GiB" in options


def memory(total_gib: float) -> dict:
    return {"total_bytes": int(total_gib * GIB), "cgroup_limit_bytes": None}


def test_preflight_memory_messages_say_gib_for_the_profiles_value():
    messages = [system.check_memory(memory(200), 256.0, "n7")["message"],              # too little
                system.check_memory(memory(512), 256.0, "n1")["message"],              # more than declared
                system.check_memory(memory(512), 256.0, "n1", sizes_dataset=True)["message"],
                system.check_memory(memory(250), 256.0, "n1")["message"]]              # within tolerance
    for message in messages:
        assert "256 GiB" in message and " GB" not in message, message
    # 250 GiB of MemTotal against 256 GiB declared passes: the comparison is in GiB, not in 10^9 bytes.
    assert system.check_memory(memory(250), 256.0, "n1")["status"] == "pass"
