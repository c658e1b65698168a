"""Speed benchmarks of the Stride Memory Transformer against its baselines (see RESULTS.md).

Run them all with `python -m benchmarks.run_all` (or `smt bench`); each module also runs
alone with `python -m benchmarks.<name>`.
"""
