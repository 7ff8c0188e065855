"""Preflight, inside the preflight job.

`node`: runs once per allocated node (srun --ntasks-per-node=1) and writes preflight/nodes/<node>.json: the node's
facts and one check per requirement of the manifest's "preflight" section. The file has two lines: a small index
(statuses, non-passing checks, clock, shared-token views), which is all gather decodes, and the full report with
"checks" as its last key, to which gather appends its own checks without decoding it.
`mpi`: a real collective over every task, started with the benchmark's launcher; rank 0 also measures each node's
clock offset by ping-pong and writes preflight/mpi.json.
`gather`: runs once on the batch host, decides what needs more than one node's report (shared-directory
visibility, clock skew, the MPI result), writes preflight.json (compact JSON: summary keys, then "reports" with
every node's full report, keyed by node) and preflight.txt, and exits non-zero on any error so that Slurm cancels
the benchmark jobs depending on the preflight (afterok).

Check ids are stable (rules, status and tests read them): engine.<benchmark>, os.distribution, os.kernel,
cpu.count, memory.size, python.version, python.import.<module>, python.lockfile, executable.<name>,
storage.<id>.writable, storage.<id>.filesystem, storage.<id>.free_space, storage.<id>.cache_drop, storage.separate.<a>.<b> (node);
storage.<id>.shared, clock.skew, node.report (gather, per node); mpi.collective (gather, node "all").

The manifest's "preflight" section (written by the plan; every key optional): python, python_modules, executables,
lockfile, storage [{id, path, required_free_bytes, shared?, cache_drop?}], expect_filesystem_type, storage_shared,
separate_filesystems, memory_gb_expected, cpus_expected, memory_sizes_dataset, cache_drop_required,
shared_token_timeout_s, clock_skew_warn_s, clock_skew_error_s, engine_probes [{benchmark, code, args}] (the probes
the login node could not run in the image: mlps_slurm.probes), container (what the job scripts bind and create
first: mlps_slurm.plan.container_setup; not read by the node checks).

Shared visibility: every node writes a token into each shared storage directory
(<dir>/.mlps-preflight-<job>/<shard>/<node>) first thing, runs its other checks, then waits (at most
`shared_token_timeout_s`, 5 s) for the tokens of up to 16 ring neighbours in the sorted node list (all other nodes in
allocations of up to 17). The node reports which it did not see; gather blames a node whose view disagrees with the
majority of its neighbours (it missed more than half of its targets, or more than half of its checkers missed it).
Sampling neighbours keeps the metadata load O(nodes), not O(nodes^2), on large allocations.

Modules: common (check results, statuses, node names), system and storage (the node checks), node_facts (what
a node is), tokens (shared visibility), node, mpi and gather (the three steps), report (the node report file,
preflight.json and preflight.txt), __main__ (the command line the sbatch script runs). This package file imports
none of them, so that importing one module loads only what it needs.
"""
