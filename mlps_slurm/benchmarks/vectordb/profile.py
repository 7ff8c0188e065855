"""The site-profile section the vectordb benchmark owns: where its Milvus comes from (vectordb.milvus.*).

embedded: every benchmark job starts a real Milvus standalone server (PyPI `milvus` 2.3.5, in the jobs' Python)
on the storage under test, with its own data directory, ports and a random per-job password, and stops it.
external: the site's own Milvus at `uri`; its token is read at run time from a file or an environment variable and
never written into scripts, logs, manifests or bundles.
"""

from __future__ import annotations

import re

from mlps_slurm.profile.schema import ABS_OR_HOME, Field

_PATH = "an absolute path (~ and $VAR allowed)"

FIELDS: dict[str, Field] = {
    "vectordb.milvus.mode": Field("str", "embedded", "Where the Milvus server comes from: embedded (started by each "
                                  "job on the storage under test) or external (the site's server at uri).",
                                  choices=("embedded", "external")),
    "vectordb.milvus.data_dir": Field("str", "~/mlps-slurm/vectordb", "embedded: where each run's Milvus data "
                                      "directory is created (the storage under test; removed when the run ends).",
                                      pattern=ABS_OR_HOME, pattern_help=_PATH, path=True, storage="vectordb_dir"),
    "vectordb.milvus.port_base": Field("int", 19530, "embedded: the first port tried for the server's 11 ports "
                                       "(a free block is searched upward from here on the server's node).",
                                       minimum=1024),
    "vectordb.milvus.start_timeout_s": Field("float", 300.0, "embedded: seconds the server may take to become "
                                             "healthy before the job fails.", minimum=1),
    "vectordb.milvus.index_timeout_s": Field("float", 7200.0, "Seconds an index build (and a collection load) may "
                                             "take before the job fails, naming the index.", minimum=1),
    "vectordb.milvus.uri": Field("str", None, "external: the server, e.g. http://milvus.example.org:19530 or "
                                 "https://...; required when mode is external.", nullable=True,
                                 pattern=re.compile(r"^(https?|tcp)://[A-Za-z0-9_.\-\[\]:]+(:\d+)?/?$"),
                                 pattern_help="http(s)://HOST:PORT (no credentials in the URI)"),
    "vectordb.milvus.token_file": Field("str", None, "external: a file holding the token (USER:PASSWORD or an API "
                                        "key), read by the jobs at run time.", nullable=True,
                                        pattern=ABS_OR_HOME, pattern_help=_PATH, path=True),
    "vectordb.milvus.token_env": Field("str", None, "external: the environment variable holding the token in the "
                                       "jobs (instead of token_file).", nullable=True,
                                       pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"),
                                       pattern_help="an environment variable name"),
    "vectordb.milvus.db_name": Field("str", None, "external: the Milvus database (default: the server's default).",
                                     nullable=True, pattern=re.compile(r"^[A-Za-z0-9_]+$"),
                                     pattern_help="letters, digits or '_'"),
}
