"""The paper's Fig. 7 and Figs. 28-30 on finished runs (reproduce.py fig7 / gradcorr --from EXPERIMENT): P3O's
distillation epochs per reset against its gain over PPO, and the actor's gradient correlation matrix.
"""

import numpy as np
import torch

import evaluate

from .collect import read_csv, seed_values, select, write_csv
from .registry import PAPER_FIGURES
from .stats import normalisation
from .tables import comparison_table, interval_text, markdown_table

GRADCORR_ALGOS = ("ppo", "redo", "cycle", "p3o")  # the paper's PPO, ReDo and P3O, and the cycle reset beside P3O
GRADCORR_SAMPLES = 256  # states per run (the matrix is samples x samples)
GRADCORR_SEED = 2_000_000  # seeds the states' episodes and the sampled actions (no training seed is that large)


def fig7_points(rows):
    """Per finished P3O run of a task that also has finished PPO runs: (task, seed, distillation epochs
    per reset, improvement), the improvement being its final return minus the mean final return of the
    task's PPO runs, in normalised-score units (normalisation), so tasks share one axis."""
    points = []
    for env in dict.fromkeys(r["env"] for r in rows):
        ppo = list(seed_values(select(rows, env=env, algo="ppo"), "final_return").values())
        scale = normalisation(env)
        for r in select(rows, env=env, algo="p3o", status="done"):
            if ppo and scale and r.get("distill_per_reset") is not None:
                points.append((env, r["seed"], r["distill_per_reset"],
                               (r["final_return"] - np.mean(ppo)) / (scale[1] - scale[0])))
    return points


def fig7(rows, out_dir, stem, source_csv):
    """Fig. 7 from a runs CSV: the points' table, Spearman's rank correlation over the runs, a scatter."""
    from scipy import stats

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = fig7_points(rows)
    if not points:
        raise SystemExit(f"error: {source_csv} has no finished P3O run beside finished PPO runs of its task")
    x, y = np.array([p[2] for p in points]), np.array([p[3] for p in points])
    rho, p = stats.spearmanr(x, y) if len(points) > 2 else (float("nan"), float("nan"))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, env in enumerate(dict.fromkeys(p[0] for p in points)):
        sel = [q for q in points if q[0] == env]
        ax.scatter([q[2] for q in sel], [q[3] for q in sel], color=f"C{i}", label=f"{env} (n={len(sel)})")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("P3O distillation epochs per reset")
    ax.set_ylabel("final return - PPO mean (normalised score)")
    ax.set_title(f"Fig. 7: Spearman rho {rho:.2f} (p {p:.3f}) over {len(points)} runs", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / f"fig7_{stem}.png", dpi=100)
    plt.close(fig)
    body = [[env, seed, f"{epochs:.2f}", f"{gain:+.3f}"] for env, seed, epochs, gain in points]
    (out_dir / f"fig7_{stem}.md").write_text("\n".join([
        f"# {PAPER_FIGURES['fig7']}", "", f"From `{source_csv}` (its runs and their commits are named there).", "",
        "One point per finished P3O run: its distillation epochs per reset (checkpoint) against its final return "
        "minus the mean final return of the task's PPO runs, in normalised-score units (0 at a random policy, 1 "
        "at the paper's PPO; DMC return / 1000). The paper plots one point per task and does not say how it "
        "measured the improvement.", "",
        markdown_table(["task", "seed", "distillation epochs per reset", "improvement over PPO"], body), "",
        f"Spearman's rank correlation over the {len(points)} runs: rho = {rho:.2f}, two-sided p = {p:.3f}"
        + (" (not separated from no correlation)." if not p < 0.05 else "."), ""]))
    return [out_dir / f"fig7_{stem}.md", out_dir / f"fig7_{stem}.png"]


def gradient_correlation(actor_mean, logstd, obs, actions):
    """The normalised gradient covariance over samples of Lyle et al. (2023), for a Gaussian policy:
    C[i, j] = cos(g_i, g_j), g_i the gradient of log pi(a_i | s_i) with respect to every actor parameter
    (the mean network's and the log-std). 1 on the diagonal; 0 between samples whose gradients are
    orthogonal (no interference), -1 between samples whose updates undo each other."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in actor_mean.named_parameters()}

    def log_prob(p, log_std, s, a):
        mean = functional_call(actor_mean, p, (s[None],))[0]
        return (-0.5 * ((a - mean) / log_std.exp()).square() - log_std).sum()

    g, g_std = vmap(grad(log_prob, argnums=(0, 1)), in_dims=(None, None, 0, 0))(params, logstd.detach(), obs, actions)
    flat = torch.cat([v.reshape(len(obs), -1) for v in g.values()] + [g_std], dim=1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (unit @ unit.T).detach()


def run_gradient_correlation(run_path, samples=GRADCORR_SAMPLES, seed=GRADCORR_SEED):
    """gradient_correlation of a PPO-family run's final actor over `samples` states of its own deterministic
    policy (episodes seeded `seed` on, observations normalised with its statistics, frozen), with actions
    sampled from the policy (torch generator seeded `seed`)."""
    import envs as envs_package

    module, ckpt = evaluate.load_run(str(run_path))
    if "agent" not in ckpt:
        raise SystemExit(f"error: {run_path}: gradient correlation is defined here for the PPO family only")
    run_args = module.Args(**ckpt["args"])
    stats = {k: ckpt["env_state"]["wrapper"][k] for k in ("obs_mean", "obs_var", "obs_count")}
    vec, obs = envs_package.make_env(run_args.env_id, 1, seed, normalize=True, gamma=run_args.gamma,
                                     friction_period=run_args.friction_period, frozen_obs_stats=stats)
    agent = module.Agent(obs.shape[1], vec.single_action_space.shape[0], run_args)
    agent.load_state_dict(ckpt["agent"])
    states = []
    with torch.no_grad():
        while len(states) < samples:
            states.append(torch.as_tensor(obs[0], dtype=torch.float32))
            obs = vec.step(agent.actor_mean(torch.as_tensor(obs, dtype=torch.float32)).numpy())[0]
        states = torch.stack(states)
        mean = agent.actor_mean(states)
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
        actions = mean + agent.actor_logstd.exp() * noise
    vec.close()
    return gradient_correlation(agent.actor_mean, agent.actor_logstd, states, actions)


def off_diagonal_mean_abs(matrix):
    """Mean |C[i, j]| over i != j: the summary of a correlation matrix (0: samples do not interfere)."""
    n = matrix.shape[0]
    return float((matrix.abs().sum() - matrix.diagonal().abs().sum()) / (n * n - n))


def gradcorr(runs, states, out_dir, stem, source):
    """Figs. 28-30: per task, a panel per method (its lowest finished seed's matrix), and per method and
    task the mean |off-diagonal| correlation of every finished seed, with Welch's p of P3O against each.
    Every seed's value also goes to gradcorr_<stem>.csv; a seed there with no finished run here (its
    checkpoint gone) is kept in the table, marked *, so runs made in different places add up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in runs if r.variant.algo in GRADCORR_ALGOS and states[r.directory].status == "done"]
    if not done:
        raise SystemExit(f"error: {source} has no finished run of {', '.join(GRADCORR_ALGOS)} in this runs directory")
    matrices = {(r.env, r.variant.name, r.seed): run_gradient_correlation(states[r.directory].run_path) for r in done}
    envs, methods = list(dict.fromkeys(r.env for r in done)), list(dict.fromkeys(r.variant.name for r in done))
    fig, axes = plt.subplots(len(envs), len(methods), figsize=(3.2 * len(methods), 3.2 * len(envs) + 0.6),
                             squeeze=False)
    for row, env in enumerate(envs):
        for col, method in enumerate(methods):
            ax, seeds = axes[row][col], sorted(s for e, m, s in matrices if (e, m) == (env, method))
            ax.set_xticks([])
            ax.set_yticks([])
            if seeds:
                image = ax.imshow(matrices[(env, method, seeds[0])].numpy(), cmap="RdBu", vmin=-1, vmax=1)
                ax.set_title(f"{env}\n{method} seed {seeds[0]}", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    fig.suptitle(f"{PAPER_FIGURES['gradcorr']} ({GRADCORR_SAMPLES} states; red -1, blue +1)", fontsize=9)
    fig.savefig(out_dir / f"gradcorr_{stem}.png", dpi=100)
    plt.close(fig)
    values, kept = {}, set()  # (task, method) -> {seed: mean |off-diagonal|}; kept: from the earlier CSV
    planned = {(r.env, r.variant.name, r.seed) for r in runs}
    csv_path = out_dir / f"gradcorr_{stem}.csv"
    for row in read_csv(csv_path) if csv_path.exists() else []:
        key = (row["env"], row["variant"], row["seed"])
        if key in planned and key not in matrices:
            values.setdefault(key[:2], {})[key[2]] = row["gradcorr"]
            kept.add(key)
    for (e, m, seed), c in matrices.items():
        values.setdefault((e, m), {})[seed] = off_diagonal_mean_abs(c)
    variants = [v for v in dict.fromkeys(r.variant for r in runs) if any(m == v.name for _, m in values)]
    envs = [e for e in dict.fromkeys(r.env for r in runs) if any(t == e for t, _ in values)]
    rows = [{"env": e, "variant": m, "seed": seed, "status": "done", "gradcorr": x}
            for (e, m), by_seed in values.items() for seed, x in sorted(by_seed.items())]
    write_csv(csv_path, rows, ("env", "variant", "seed", "gradcorr"))
    body = [[e, v.name, interval_text(values[(e, v.name)].values(), "{:.3f}"),
             "; ".join(f"{seed}{'*' * ((e, v.name, seed) in kept)}: {x:.3f}"
                       for seed, x in sorted(values[(e, v.name)].items()))]
            for e in envs for v in variants if (e, v.name) in values]
    compared = comparison_table(rows, variants, envs, [("gradcorr", "gradient correlation")], "{:+.3f}")
    (out_dir / f"gradcorr_{stem}.md").write_text("\n".join([
        f"# {PAPER_FIGURES['gradcorr']}", "", f"Finished runs of `{source}` in this runs directory"
        + (f"; seeds marked * are kept from `{csv_path.name}`, computed where their checkpoints were (the matrices "
           "drawn are this directory's runs only)." if kept else "."), "",
        "The paper does not define its matrix. Ours is the normalised gradient covariance over samples of Lyle et "
        "al. (2023): C[i, j] = cos(g_i, g_j), g_i the gradient of log pi(a_i | s_i) with respect to every actor "
        f"parameter, over {GRADCORR_SAMPLES} states of the run's own deterministic policy (episode seeds "
        f"{GRADCORR_SEED:,} on, observations normalised with its statistics) and actions sampled from its "
        "policy. Summary: the mean |C[i, j]| over i != j (0: the samples' updates do not interfere).", "",
        markdown_table(["task", "method", "mean abs off-diagonal correlation", "seed: value"], body), "",
        *(["P3O against each method (Welch's two-sided p):", "", compared, ""] if compared else [])]))
    return [out_dir / f"gradcorr_{stem}.md", out_dir / f"gradcorr_{stem}.png"]
