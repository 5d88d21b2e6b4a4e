"""Evaluate a trained run of any of the six training files: deterministic returns, videos, a GIF.

    python evaluate.py runs/Hopper-v5__p3o_continuous__1__1732000000
    python evaluate.py runs/<run> --episodes 20 --video             # and an MP4 per episode
    python evaluate.py runs/<cyclefriction run> --video --friction 1   # Cycle Friction at friction x1
    python evaluate.py runs/<ppo run> runs/<p3o run> --gif agents.gif  # side by side, labelled
    python evaluate.py --help

For each run directory it reads the checkpoint with the loader of the file that wrote it (the
checkpoint names it; an older checkpoint that does not is told apart by its arguments, as --resume
does), rebuilds the policy with that file's own classes and runs --episodes episodes on one env with
the deterministic action: PPO's Gaussian mean, SAC's tanh of the pre-squash mean scaled to the action
bounds. PPO-family policies see observations normalised with the run's saved statistics, frozen.
Episode k is seeded with --seed + k, which must not be one of the seeds the run trained on. It
prints the mean +- std of the raw (unnormalised) return and of the episode length, and the share of
the deterministic action's components that lie beyond the action bounds (the env clips them, so how far
beyond does not change what the agent does), and writes one CSV row per episode (default
<run>/evaluation.csv; that share per episode: beyond_bounds). Anything wrong exits with one line.
"""

import csv
import importlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
import tyro

import envs

SCRIPTS = ("ppo_continuous.py", "p3o_continuous.py", "ppo_cycle.py", "ppo_redo.py", "ppo_cbp.py", "sac_sbp.py")
FRICTION_HOLD = 10**15  # a Cycle Friction period no evaluation reaches: the friction stays where it starts


@dataclass
class Args:
    run_dirs: tyro.conf.Positional[tuple[str, ...]]
    """run directories (runs/<run name>, with checkpoint.pt) of any of the six training files"""
    episodes: int = 10
    """evaluation episodes per run"""
    seed: int = 1_000_000
    """episode k is seeded with seed + k; none may be one of the run's training seeds (its --seed to
    --seed + num_envs - 1)"""
    friction: Optional[Literal[1, 2, 3, 4]] = None
    """Cycle Friction multiplier of the geoms' default sliding friction, fixed for every episode. Default:
    for a cyclefriction/ run the one in force at its last step, for any other run none (the task as is);
    given for a MuJoCo or DeepMind Control run, it evaluates on cyclefriction/<its env id> at that friction"""
    video: bool = False
    """write an MP4 per episode to <run>/eval_videos/episode-<k>.mp4 (needs OpenGL: see docs/watch.md)"""
    video_size: int = 256
    """height and width in pixels of videos and GIF frames (even)"""
    gif: Optional[str] = None
    """write an animated GIF to this path: the first episode of each run, side by side, each labelled with its
    file, env and that episode's return (README's figure: pass a PPO run and a P3O run)"""
    strip: Optional[str] = None
    """write a PNG to this path: one labelled row per run of --strip-frames frames of its first episode, one every
    --strip-every steps from step --strip-start (a still figure of the gait, far smaller than a GIF)"""
    strip_start: int = 200
    """--strip: the step of the first frame"""
    strip_every: int = 4
    """--strip: steps between two frames"""
    strip_frames: int = 8
    """--strip: frames per run"""
    csv: Optional[str] = None
    """write every run's rows to this one CSV; default: <run>/evaluation.csv per run"""
    threads: int = 1
    """torch CPU threads"""


def fail(message):
    sys.exit(f"error: {message}")


def validate_args(args):
    checks = [
        (len(args.run_dirs) >= 1, "give at least one run directory (runs/<run name>)"),
        (args.episodes >= 1, f"--episodes {args.episodes} must be >= 1"),
        (args.seed >= 0, f"--seed {args.seed} must be >= 0"),
        (args.video_size >= 16 and args.video_size % 2 == 0, f"--video-size {args.video_size} must be even and >= 16"),
        (args.threads >= 1, f"--threads {args.threads} must be >= 1"),
        (args.strip_start >= 0, f"--strip-start {args.strip_start} must be >= 0"),
        (args.strip_every >= 1, f"--strip-every {args.strip_every} must be >= 1"),
        (args.strip_frames >= 1, f"--strip-frames {args.strip_frames} must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            fail(message)
    for run_dir in args.run_dirs:
        if not os.path.isdir(run_dir):
            fail(f"{run_dir} is not a directory: give a run directory (runs/<run name>) that a training file wrote")
        if not any(os.path.isfile(os.path.join(run_dir, name)) for name in ("checkpoint.pt", "checkpoint.prev.pt")):
            fail(f"{run_dir} has no checkpoint.pt: give a run directory (runs/<run name>) that a training file wrote")


def checkpoint_script(run_dir):
    """The file the run's checkpoint names: "" when it names none (older versions wrote none), None when no
    checkpoint can be read."""
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        try:
            checkpoint = torch.load(os.path.join(run_dir, name), map_location="cpu", weights_only=False, mmap=True)
        except Exception:
            continue
        return (checkpoint.get("script") or "") if isinstance(checkpoint, dict) else ""
    return None


def load_run(run_dir, mmap=False):
    """(module of the file that wrote the run, its checkpoint), read with that file's own loader, which exits
    with one line on an unreadable checkpoint or one of another format. mmap: memory-map its tensors
    (reproduce.py reads a SAC run's arguments without loading its replay buffer)."""
    script = checkpoint_script(run_dir)
    if script == "":
        fail(f"{run_dir}: its checkpoint names no file (older versions of this project wrote none); evaluate it "
             "with the version that wrote it")
    if script is not None and script not in SCRIPTS:
        fail(f"{run_dir}: its checkpoint was written by {script}, which is none of {', '.join(SCRIPTS)}")
    module = importlib.import_module((script or SCRIPTS[0])[: -len(".py")])  # none readable: its loader says why
    return module, module.load_checkpoint(run_dir, mmap=mmap)


def make_policy(module, checkpoint, run_args, obs_dim, act_dim, low, high):
    """The run's deterministic policy, a function of a batch of (normalised, for PPO) observations."""
    if "agent" in checkpoint:  # the PPO family: the Gaussian's mean
        agent = module.Agent(obs_dim, act_dim, run_args)
        agent.load_state_dict(checkpoint["agent"])
        return agent.eval().actor_mean
    actor = module.Actor(obs_dim, act_dim, low, high, run_args)  # SAC: the tanh of the pre-squash mean, scaled
    actor.load_state_dict(checkpoint["actor"])
    actor.eval()

    def act(obs):
        mean, _ = actor(obs)
        return torch.tanh(mean) * actor.action_scale + actor.action_bias

    return act


def evaluation_env(run_args, friction):
    """(env id, friction period, start step) that make_env needs to hold Cycle Friction at `friction`."""
    env_id = run_args.env_id
    if friction is None:
        return env_id, run_args.friction_period, 0
    if not env_id.startswith("cyclefriction/"):
        env_id = "cyclefriction/" + env_id
    return env_id, FRICTION_HOLD, envs.FRICTION_SCHEDULE.index(friction) * FRICTION_HOLD


def evaluate_run(run_dir, args, video_dir):
    """Rows (one dict per episode) of the run's evaluation; episode k's MP4 in video_dir when given."""
    module, checkpoint = load_run(run_dir)
    run_args = module.Args(**checkpoint["args"])
    script, ppo = checkpoint.get("script", module.__name__ + ".py"), "agent" in checkpoint
    training_seeds = range(run_args.seed, run_args.seed + run_args.num_envs)
    overlap = sorted(set(training_seeds) & set(range(args.seed, args.seed + args.episodes)))
    if overlap:
        fail(f"--seed {args.seed} with --episodes {args.episodes} would evaluate on seeds {overlap} that {run_dir} "
             f"trained on ({training_seeds.start} to {training_seeds.stop - 1}); give another --seed")
    friction = args.friction
    if friction is None and run_args.env_id.startswith("cyclefriction/"):
        friction = envs.friction_multiplier(checkpoint["global_step"], run_args.friction_period)
    env_id, friction_period, start_step = evaluation_env(run_args, friction)
    try:
        envs.validate_env_id(env_id)
    except ValueError as e:
        fail(f"--friction {friction}: {e}")
    stats = {k: checkpoint["env_state"]["wrapper"][k] for k in ("obs_mean", "obs_var", "obs_count")} if ppo else None
    rows, policy = [], None
    for k in range(args.episodes):
        seed = args.seed + k
        record = video_dir if (video_dir and (args.video or k == 0)) else None
        vec, obs = envs.make_env(env_id, 1, seed, normalize=ppo, gamma=run_args.gamma, friction_period=friction_period,
                                 start_step=start_step, video_dir=record, video_size=args.video_size,
                                 frozen_obs_stats=stats)
        if policy is None:
            space = vec.single_action_space
            policy = make_policy(module, checkpoint, run_args, obs.shape[1], space.shape[0], space.low, space.high)
        video, beyond = None, 0
        while True:
            with torch.inference_mode():
                action = policy(torch.from_numpy(obs)).numpy()
            beyond += int(((action < space.low) | (action > space.high)).sum())
            obs, _, _, _, infos = vec.step(action)
            if "_episode" in infos and infos["_episode"][0]:
                episode_return, length = float(infos["episode"]["r"][0]), int(infos["episode"]["l"][0])
                if "video" in infos:
                    video = os.path.join(video_dir, f"episode-{k:03d}.mp4")
                    os.replace(infos["video"], video)
                break
        vec.close()
        rows.append({"run": run_dir, "script": script, "env_id": env_id, "train_seed": run_args.seed,
                     "global_step": checkpoint["global_step"], "episode": k, "seed": seed,
                     "friction": friction or "", "return": episode_return, "length": length,
                     "beyond_bounds": beyond / (length * space.shape[0]), "video": video if args.video else ""})
    return rows


def episode_label(row):
    """The text lines under which an episode is drawn: file, training seed and task (comma-separated: the
    default font draws a space after 's' so narrow that "p3o_continuous seed 1" read as one word), return."""
    return [f"{row['script'][:-3]}, seed {row['train_seed']}, {row['env_id']}", f"return {row['return']:.0f}"]


def label(frame, lines):
    """The frame under a white band holding the text lines."""
    from PIL import Image, ImageDraw

    size = max(10, frame.shape[0] // 18)  # from the height: a strip's row is one frame high, many wide
    band = len(lines) * (size + 2) + 4
    image = Image.new("RGB", (frame.shape[1], frame.shape[0] + band), "white")
    image.paste(Image.fromarray(frame), (0, band))
    ImageDraw.Draw(image).text((4, 2), "\n".join(lines), fill="black", font_size=size, spacing=2)
    return np.asarray(image)


def write_gif(path, episodes):
    """An animated GIF of episodes [(frames, label lines)] side by side; a shorter one holds its last frame."""
    length = max(len(frames) for frames, _ in episodes)
    panels = [np.concatenate([frames, np.repeat(frames[-1:], length - len(frames), axis=0)]) for frames, _ in episodes]
    strip = [np.concatenate([label(panel[t], text) for panel, (_, text) in zip(panels, episodes)], axis=1)
             for t in range(length)]
    with open(path, "wb") as f:
        f.write(envs.encode_gif(strip))


def write_strip(path, episodes, start, every, count):
    """A PNG of episodes [(frames, label lines)], one labelled row each: `count` frames every `every` steps from
    step `start` (frame 0 is the reset, frame t the state after step t; a short episode gives what it has)."""
    from PIL import Image

    rows = [label(np.concatenate(list(frames[start::every][:count]) or [frames[-1]], axis=1), text)
            for frames, text in episodes]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main():
    args = tyro.cli(Args)
    validate_args(args)
    frames_wanted = args.gif or args.strip  # the first episode's frames, from a video in a scratch folder
    if args.video or frames_wanted:
        try:  # before MuJoCo or dm_control is imported
            envs.choose_gl_backend("--video" if args.video else "--gif" if args.gif else "--strip")
        except ValueError as e:
            fail(str(e))
    torch.set_num_threads(args.threads)
    all_rows, first_episodes, scratch = [], [], tempfile.mkdtemp(prefix="evaluate-")
    try:
        for run_dir in args.run_dirs:
            video_dir = os.path.join(run_dir, "eval_videos") if args.video else (scratch if frames_wanted else None)
            rows = evaluate_run(run_dir, args, video_dir)
            returns, lengths = np.array([r["return"] for r in rows]), np.array([r["length"] for r in rows])
            friction = f" at friction x{rows[0]['friction']}" if rows[0]["friction"] else ""
            beyond = np.mean([r["beyond_bounds"] for r in rows])
            print(f"{run_dir} ({rows[0]['script']}, {rows[0]['env_id']}{friction}, step {rows[0]['global_step']:,}): "
                  f"return {returns.mean():.1f} ± {returns.std():.1f}, length {lengths.mean():.1f} ± "
                  f"{lengths.std():.1f} over {len(rows)} episodes; {beyond:.0%} of action components beyond the "
                  "bounds (ClipAction clips them)")
            if frames_wanted:
                first_episodes.append((envs.read_mp4(os.path.join(video_dir, "episode-000.mp4")),
                                     episode_label(rows[0])))
            if args.csv is None:
                write_csv(os.path.join(run_dir, "evaluation.csv"), rows)
            all_rows += rows
        if args.csv is not None:
            write_csv(args.csv, all_rows)
        if args.gif:
            write_gif(args.gif, first_episodes)
            print(f"wrote {args.gif}")
        if args.strip:
            write_strip(args.strip, first_episodes, args.strip_start, args.strip_every, args.strip_frames)
            print(f"wrote {args.strip}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
