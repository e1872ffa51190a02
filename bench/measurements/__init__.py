"""bench/run.py's measurements, one module each (ingest, delivery, api_calls, latency, dkim): each
has `measure(run)`, its report SECTION and the METHOD text bench/RESULTS.md prints for it."""
