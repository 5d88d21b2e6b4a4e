"""Statistics: 95% t-intervals, Welch's t-test, normalised scores, and the IQM and probability of improvement with
seeded stratified-bootstrap intervals (rliable).
"""

import math

import numpy as np

from .collect import seed_values, select
from .registry import PAPER_TABLE1, task_name

# Normalised score of a task for the cross-task statistics, fixed before any result was read: MuJoCo
# (and its Cycle Friction variant) 0 at a uniformly random policy, 1 at the paper's PPO (Table 1); DMC
# return / 1000 (its returns lie in [0, 1000]). RANDOM_RETURN: mean return of 10 episodes of uniform random
# actions on the v5 task (episode seeds 0-9, action space seeded 0), random_return() below.
RANDOM_RETURN = {"Hopper": 31.1, "HumanoidStandup": 33013.6, "Walker2d": 5.7, "Ant": -23.6, "HalfCheetah": -225.9,
                 "Humanoid": 90.1}
CONFIDENCE = 0.95
BOOTSTRAP_REPS = 2000  # stratified-bootstrap resamples of the IQM and probability-of-improvement intervals
BOOTSTRAP_SEED = 0  # rliable draws from numpy's global generator: seeded, so a table is the same every time


def random_return(env_id, episodes=10):
    """Mean return of `episodes` episodes of uniform random actions (RANDOM_RETURN's measurement)."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(0)
    total = []
    for k in range(episodes):
        env.reset(seed=k)
        ret, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            ret, done = ret + float(reward), terminated or truncated
        total.append(ret)
    env.close()
    return float(np.mean(total))


def normalisation(env_id):
    """(score 0, score 1) of a task's returns, or None when it has no reference (see RANDOM_RETURN)."""
    if env_id.startswith("dm_control/"):
        return 0.0, 1000.0
    task = task_name(env_id)
    return (RANDOM_RETURN[task], PAPER_TABLE1[task]["ppo"]) if task in RANDOM_RETURN else None


def finite(values):
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def t_interval(values):
    """(mean, low, high, n): the 95% t-interval of the mean (std with ddof=1) of the finite values; low
    and high are nan for one value, everything nan (n=0) for none."""
    from scipy import stats

    vals = finite(values)
    if vals.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(vals.mean())
    if vals.size == 1:
        return mean, float("nan"), float("nan"), 1
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, vals.size - 1) * vals.std(ddof=1) / math.sqrt(vals.size))
    return mean, mean - half, mean + half, int(vals.size)


def welch_p(a, b):
    """Two-sided p-value of Welch's t-test (unequal variances) between two samples; nan below 2 values
    a side or when both are constant."""
    from scipy import stats

    a, b = finite(a), finite(b)
    if a.size < 2 or b.size < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def normalised_scores(rows, variants, envs, key):
    """{method: array (runs x tasks)} of normalised scores over the tasks that have a reference
    (normalisation), per method the seeds finished on every one of them; and those tasks."""
    tasks = [e for e in envs if normalisation(e)]
    references = [normalisation(e) for e in tasks]
    scores = {}
    for v in variants:
        per_task = [seed_values(select(rows, env=e, variant=v.name), key) for e in tasks]
        seeds = sorted(set.intersection(*(set(d) for d in per_task))) if per_task else []
        if seeds:
            scores[v.name] = np.array([[(d[s] - lo) / (hi - lo) for d, (lo, hi) in zip(per_task, references)]
                                       for s in seeds])
    return scores, tasks


def bootstrap(groups, statistic):
    """{name: (estimate, interval)} of `statistic` over each group's scores, with its 95% stratified-bootstrap
    interval (rliable); numpy is seeded (BOOTSTRAP_SEED) afresh for each group, so an interval depends only on
    its own runs, not on which other groups there are."""
    from rliable import library as rly

    out = {}
    for name, group in groups.items():
        np.random.seed(BOOTSTRAP_SEED)
        point, interval = rly.get_interval_estimates({name: group}, statistic, reps=BOOTSTRAP_REPS,
                                                     confidence_interval_size=CONFIDENCE)
        out[name] = point[name], interval[name]
    return out


def iqm_intervals(scores):
    """{method: (IQM, interval)} of each method's normalised scores (normalised_scores: runs x tasks)."""
    from rliable import metrics

    return bootstrap(scores, lambda x: np.array([metrics.aggregate_iqm(x)]))


def improvement_intervals(pairs):
    """{method: (probability of improvement, interval)} of pairs {method: (the reference's scores, the
    method's)}: the probability that the reference method improves on the method (Agarwal et al. 2021)."""
    from rliable import metrics

    return bootstrap(pairs, metrics.probability_of_improvement)
