"""Node facts read from fake /proc, /sys and /etc trees (what preflight.json records per node)."""

from __future__ import annotations

from pathlib import Path

from mlps_slurm.steps.preflight import node_facts as nf


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_os_release_parsing_and_fallback_to_usr_lib(tmp_path):
    etc = tmp_path / "etc"
    write(tmp_path / "usr" / "lib" / "os-release",
          'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n'
          'PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n# comment\n')
    facts = nf.os_facts(etc)
    assert facts == {"id": "rocky", "id_like": "rhel centos fedora", "version_id": "9.3",
                     "name": "Rocky Linux 9.3 (Blue Onyx)", "source": str(tmp_path / "usr" / "lib" / "os-release")}
    write(etc / "os-release", "ID=debian\nVERSION_ID='12'\nNAME=Debian\n")
    assert nf.os_facts(etc)["id"] == "debian" and nf.os_facts(etc)["name"] == "Debian"


def test_os_facts_without_os_release(tmp_path):
    assert nf.os_facts(tmp_path / "etc")["id"] == ""


def test_os_facts_of_this_host_use_distro():
    facts = nf.os_facts()
    assert facts["source"] == "distro" and facts["id"]


def test_cpu_facts_count_sockets_and_physical_cores(tmp_path):
    blocks = []
    for cpu in range(8):  # 2 sockets x 2 cores x 2 threads
        blocks.append(f"processor\t: {cpu}\nmodel name\t: AMD EPYC 9654\nphysical id\t: {cpu // 4}\n"
                      f"core id\t\t: {cpu % 4 // 2}\n")
    write(tmp_path / "cpuinfo", "\n".join(blocks))
    facts = nf.cpu_facts(tmp_path)
    assert facts["model"] == "AMD EPYC 9654"
    assert facts["sockets"] == 2 and facts["physical_cores"] == 4
    assert facts["logical"] >= 1 and 1 <= facts["usable"] <= facts["logical"]


def test_memory_and_cgroup_v2_limit(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "meminfo", "MemTotal:       263921660 kB\nMemFree:  1000 kB\nMemAvailable:   250000000 kB\n")
    write(proc / "self" / "cgroup", "0::/slurm/uid_0/job_42/step_0\n")
    write(cg / "slurm" / "uid_0" / "job_42" / "step_0" / "memory.max", "68719476736\n")
    facts = nf.memory_facts(proc, cg)
    assert facts["total_bytes"] == 263921660 * 1024
    assert facts["total_gib"] == round(263921660 * 1024 / 2**30, 2)
    assert facts["available_bytes"] == 250000000 * 1024
    assert facts["cgroup_limit_bytes"] == 64 << 30


def test_cgroup_unlimited_and_v1(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "self" / "cgroup", "0::/\n")
    write(cg / "memory.max", "max\n")
    assert nf.cgroup_memory_limit(proc, cg) is None
    write(proc / "self" / "cgroup", "4:memory:/slurm/job_7\n1:cpu:/\n")
    write(cg / "memory" / "slurm" / "job_7" / "memory.limit_in_bytes", "1073741824\n")
    assert nf.cgroup_memory_limit(proc, cg) == 1 << 30
    write(cg / "memory" / "slurm" / "job_7" / "memory.limit_in_bytes", "9223372036854771712\n")  # v1 "no limit"
    assert nf.cgroup_memory_limit(proc, cg) is None


def test_nics_skip_loopback_and_read_speed(tmp_path):
    for name, arp, state, speed, mtu in (("lo", 772, "unknown", None, 65536), ("eth0", 1, "up", "25000", 9000),
                                         ("ib0", 32, "up", "200000", 4092), ("eth1", 1, "down", "-1", 1500)):
        base = tmp_path / name
        write(base / "type", f"{arp}\n")
        write(base / "operstate", f"{state}\n")
        write(base / "mtu", f"{mtu}\n")
        if speed is not None:
            write(base / "speed", f"{speed}\n")
    nics = nf.nic_facts(tmp_path)
    assert nics == [
        {"name": "eth0", "kind": "ethernet", "operstate": "up", "speed_mbps": 25000, "mtu": 9000},
        {"name": "eth1", "kind": "ethernet", "operstate": "down", "speed_mbps": None, "mtu": 1500},
        {"name": "ib0", "kind": "infiniband", "operstate": "up", "speed_mbps": 200000, "mtu": 4092},
    ]
    assert nf.nic_facts(tmp_path / "absent") == []


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw 0 0
10.0.0.5@o2ib:/scratch /lus lustre rw,flock 0 0
/dev/nvme0n1 /lus/local xfs rw 0 0
server:/export /data\\040sets nfs4 rw,vers=4.2 0 0
/dev/sdb /data2 xfs rw 0 0
/dev/sdc /data2 ext4 rw 0 0
"""


def test_parse_mounts_unescapes_and_mount_for_takes_longest_prefix():
    mounts = nf.parse_mounts(MOUNTS)
    assert mounts[4] == nf.Mount("server:/export", "/data sets", "nfs4", "rw,vers=4.2")
    assert nf.mount_for("/lus/proj/ckpt", mounts).fstype == "lustre"
    assert nf.mount_for("/lus/local/x", mounts).fstype == "xfs"
    assert nf.mount_for("/lus", mounts).fstype == "lustre"
    assert nf.mount_for("/luster/x", mounts).mount_point == "/"  # a prefix of the name, not of the path
    assert nf.mount_for("/data sets/train", mounts).fstype == "nfs4"
    assert nf.mount_for("/data2/x", mounts).fstype == "ext4"  # the later mount on one directory hides the first


def test_collect_lists_only_mounts_of_the_storage_dirs(tmp_path):
    mounts = nf.parse_mounts(MOUNTS)
    facts = nf.collect(["/lus/proj/ckpt", "/lus/proj/results", "/data2/x"], mounts)
    assert [m["mount_point"] for m in facts["mounts"]] == ["/lus", "/data2"]
    assert {"hostname", "os", "kernel", "cpu", "memory", "nics"} <= set(facts)
