"""One adapter per engine: build its command line, normalize its output into metrics."""
