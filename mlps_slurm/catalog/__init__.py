"""MLPerf Storage facts as data, and the sizing formulas built on them. Pure: no I/O."""
