"""`mlps-slurm report RUN|SCHEDULE -o report.html`: an HTML page with PNG figures of a finalized run (per-checkpoint
throughput, AU per run and epoch, kv-cache and vectordb metrics per trial or run, host metrics per node) or of a
schedule (each metric over time across its runs, regressions marked).

figures.py  what is drawn, as plain data (each benchmark's plots.py returns these; no matplotlib)
collect.py  a run directory or a schedule's runs -> sections of facts, headline numbers and figures
hostmetrics.py  the host-metrics figures from the sampler's series files
draw.py     the only module that imports matplotlib (an optional extra, `pip install 'mlps-slurm[plots]'`)
page.py     the HTML page
commands.py the command: resolve RUN or SCHEDULE, draw, write atomically
"""
