"""Suites: one command reproduces a paper (``harness suite plan|run FILE|NAME``).

A suite is a TOML file naming train, run and distil jobs and how they depend on each other
(:mod:`harness.suites.spec` parses and validates it); :mod:`harness.suites.plan` puts the jobs
in dependency order, gives each its place under the suite's output folder and the ``harness``
command it amounts to, and says which are done; :mod:`harness.suites.run` checks inputs and
data up front, hands what is not done to a launcher (:mod:`harness.suites.launch`: ``local``
in this process, ``slurm`` through submitit) and writes the report. The built-in suites are in
``harness/suites/builtin/``: ``two-tricks`` (every row of the Two Tricks paper's Tables 1-5 the
harness can produce) and ``smoke`` (the same shape, tiny, offline).
"""
from harness.suites.plan import Job, Plan, make_plan
from harness.suites.spec import SuiteSpec, builtin_names, load_suite

__all__ = ["Job", "Plan", "SuiteSpec", "builtin_names", "load_suite", "make_plan"]
