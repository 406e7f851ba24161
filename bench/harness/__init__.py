"""The benchmark's machinery, shared by every measurement in bench/measure/.

Where it writes (paths.py), how big a run is (sizes.py), the temporary folder (workdir.py), the
processes it starts (servers.py) and the rig they make (rig.py), what /proc says about them
(procfs.py), the client (client.py) and its load shapes (load.py), percentiles (stats.py), the
rows, verdicts and printed table (table.py), and the results file (results.py).

`make soak` (bench/soak.py) uses those too, and its own: the two instances behind nginx with Redis
(cluster.py), what its users ask and the config for it (mix.py), what each answer must be
(verdicts.py), the counts (tally.py) and the workers' memory over the run (rss_watch.py).
"""
