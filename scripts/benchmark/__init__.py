"""Benchmark sealexports against the tools it competes with, side by side, in one run.

Run it as `scripts/bench` (sets up .venv with the bench extra if needed; `python -m benchmark`
with scripts/ on the path in an environment that has it). It seeds its own data into
`.bench/bench-{visits}-{days}.db` (reused if it exists), then runs every measure `--repeat`
times, interleaved (rep 1 of every contender, then rep 2...), and reports medians:

    raw_csv / raw_json   microconversions, whole range: ours (engine.write_file, in a fresh
                         process) vs the sqlite3 shell running the same SQL, sqlite-utils, Datasette
    agg_{type}           every aggregate over the last 30 days: ours vs its bare SQL in sqlite3
    estimate_{type}      engine.estimate() and POST /exports/estimate vs the export they estimate
    memory_{fmt}         peak RSS of a ~10,000-row export vs a ~1,000,000-row one
    http                 status polls/s under 32 connections while two big exports run,
                         vs a bare Litestar app on the same uvicorn settings (and, for
                         information, the same polls with no export running: ours-idle)
    import               `sealexports import` vs `sqlite-utils insert --nl` of the same NDJSON
                         file of demo events (200,000 and 20,000), fresh databases and processes:
                         wall and CPU time, events/s, peak RSS (measures/imports.py)
    seeding              rows/s while seeding (when it seeds)

It prints a table, writes the figures as JSON (`--json`, default `<data>/results.json`), and its
last line sums up every target: `targets: 5/7 met — raw_csv 0.93<=1.0 ok, ...`. Exit status 1
means a contender failed or produced the wrong number of rows, not that a target was missed.

Every contender's output is counted (rows) so that none wins by doing less. Servers listen on
loopback only and are stopped at exit; one run at a time per data folder (a lock waits).
Our server is `sealexports serve` at log level warning, with the plan's request rate limit
raised out of reach (serve.toml).

Modules: data (the seeded file and what it should give), servers (ours, Datasette, a bare
Litestar app), load (the HTTP load generator), processes (timed child processes), results
(figures, targets, the table), measures/ (one module a measure), programs/ (what runs in
child processes), main (options and the run).
"""
