"""reproduce_utils: the work behind reproduce.py, one job per module (docs/reproduce.md maps them).

registry: the paper's experiments, algorithms, budgets and numbers; plan: the runs of an experiment and their
state; local and slurm: the launchers; collect: what is read from the run directories; stats: the statistics;
tables, figures, paper_figures: the markdown and the PNGs; report: one experiment's results, written.
The training files, envs/, evaluate.py and benchmark.py do not import this package.
"""
