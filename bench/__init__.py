"""Benchmark programs, not tests: ``python -m bench.run`` and ``bench.torchtitan_compare``.

See docs/PERFORMANCE.md for the plan, the commands and the figures measured so far.
"""
