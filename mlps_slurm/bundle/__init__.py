"""The submission bundle: a verified MLPerf Storage submission tree, its SHA256SUMS, and a tarball of both.

    <out>/                                      (the bundle directory; <name> = its name)
      closed|open/<org>/systems/<system>.yaml   generated from the preflight facts and the profile
      closed|open/<org>/results/<system>/<benchmark tree name>/<model>/...
                                                each benchmark's layout (its bundle.py): results.json and the run,
                                                whole in a timestamp directory or split into datasize/<ts>,
                                                datagen/<ts> and run/<ts> x runs
      results.json, results.csv                 one row per bundled run, with its headline metrics
      verify.json, verify.txt                   the verification the bundle was built from
      SHA256SUMS                                sha256sum -c compatible, over every file above
      <name>.tar.gz                             everything above under <name>/

    layout.py    Entry and the two run layouts benchmarks choose from
    tarball.py   the tree and the tarball written in one pass, the parallel gzip stream
    tree.py      make_bundle: which runs go where, and the generated files
    check.py     check_bundle (a tarball), check_tree (its directory): checksums, the rules re-run on the runs
"""

from mlps_slurm.bundle.check import BundleCheck, check_bundle, check_command, check_tree
from mlps_slurm.bundle.layout import RUN_SKIP, Entry
from mlps_slurm.bundle.tarball import (BLOCK_BYTES, COPY_BUFFER, GZIP_LEVEL, SUMS, ParallelGzipWriter,
                                       write_tree_and_tarball)
from mlps_slurm.bundle.tree import (CSV_FIRST, EXIT_ERROR, EXIT_OK, EXIT_REFUSED, BundleError, BundleResult,
                                    build_bundle, bundle_command, make_bundle, results_csv, system_description)

__all__ = ["BLOCK_BYTES", "COPY_BUFFER", "CSV_FIRST", "EXIT_ERROR", "EXIT_OK", "EXIT_REFUSED", "GZIP_LEVEL",
           "RUN_SKIP", "SUMS", "BundleCheck", "BundleError", "BundleResult", "Entry", "ParallelGzipWriter",
           "build_bundle", "bundle_command", "check_bundle", "check_command", "check_tree", "make_bundle", "results_csv",
           "system_description", "write_tree_and_tarball"]
