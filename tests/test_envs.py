"""envs/: every id kind builds and steps, DMC adapter, Cycle Friction schedule, bad ids, snapshots."""

import numpy as np
import pytest

from envs import FRICTION_SCHEDULE, friction_multiplier, get_env_state, make_env, set_env_state


@pytest.mark.parametrize("env_id, obs_dim", [
    ("Hopper-v5", 11), ("HalfCheetah-v5", 17), ("dm_control/hopper-hop", 15), ("dm_control/cartpole-swingup", 5),
    ("cyclefriction/Hopper-v5", 11), ("cyclefriction/dm_control/walker-walk", 24), ("Pendulum-v1", 3),
])
def test_each_id_kind_builds_steps_and_resets(env_id, obs_dim):
    envs, obs = make_env(env_id, num_envs=2, seed=0, normalize=True)
    assert obs.shape == (2, obs_dim) and obs.dtype == np.float32
    for _ in range(5):
        obs, reward, term, trunc, infos = envs.step(envs.action_space.sample())
    assert obs.shape == (2, obs_dim) and obs.dtype == np.float32
    assert reward.shape == (2,) and term.dtype == bool and trunc.dtype == bool
    obs, _ = envs.reset(seed=1)
    assert obs.shape == (2, obs_dim)
    envs.close()


def test_dmc_observation_is_the_flat_task_observation():
    from dm_control import suite

    envs, obs = make_env("dm_control/hopper-hop", num_envs=1, seed=3)
    reference = suite.load("hopper", "hop", task_kwargs={"random": 3})
    expected = np.concatenate([v.ravel() for v in reference.reset().observation.values()]).astype(np.float32)
    np.testing.assert_allclose(obs[0], expected, rtol=1e-6)
    assert envs.single_action_space.low.tolist() == [-1.0] * 4


def test_dmc_episode_is_truncated_not_terminated_at_1000_steps():
    envs, _ = make_env("dm_control/cartpole-balance", num_envs=1, seed=0)
    for t in range(1, 1001):
        _, _, term, trunc, infos = envs.step(np.zeros((1, 1), dtype=np.float32))
        if term[0] or trunc[0]:
            break
    assert t == 1000 and trunc[0] and not term[0]
    assert infos["episode"]["l"][0] == 1000


def test_truncation_reports_true_final_observation():
    """Pendulum truncates at 200 steps; final_obs must be the 200th observation, not the reset one."""
    envs, _ = make_env("Pendulum-v1", num_envs=2, seed=5)
    import gymnasium as gym

    single = gym.make("Pendulum-v1")
    single.reset(seed=5)
    actions = np.random.default_rng(0).uniform(-2, 2, size=(200, 2, 1)).astype(np.float32)
    for t in range(200):
        obs, _, term, trunc, infos = envs.step(actions[t])
        expected, *_ = single.step(actions[t, 0])
    assert trunc.all() and not term.any()
    np.testing.assert_allclose(infos["final_obs"][0], expected, rtol=1e-6)
    assert not np.allclose(obs[0], expected)  # the returned obs is already the next episode's


def test_friction_schedule_values():
    period = 10
    seen = [friction_multiplier(step, period) for step in range(0, 70, period)]
    assert seen == [4, 3, 2, 1, 2, 3, 4]
    assert [friction_multiplier(s, period) for s in (9, 10, 59, 60)] == [4, 3, 3, 4]
    assert FRICTION_SCHEDULE[0] == 4


def test_cycle_friction_changes_the_model_between_episodes():
    num_envs, period = 2, 40
    envs, _ = make_env("cyclefriction/Hopper-v5", num_envs=num_envs, seed=0, friction_period=period)
    wrapper = envs.env.envs[0].env  # Snapshot -> CycleFriction
    default = wrapper.default_friction.copy()
    np.testing.assert_allclose(default, [1.0, 0.9, 0.9, 0.9, 2.0])
    np.testing.assert_allclose(wrapper.model.geom_friction[:, 0], default * 4)
    seen, current = [], 4
    for t in range(1, 400):
        _, _, term, trunc, _ = envs.step(envs.action_space.sample())
        if term[0] or trunc[0]:  # the new episode starts with the multiplier of this global step
            current = friction_multiplier(t * num_envs, period)
            seen.append(current)
        # never changed mid-episode
        np.testing.assert_allclose(wrapper.model.geom_friction[:, 0], default * current)
    assert {1, 2, 3, 4} <= set(seen)


@pytest.mark.parametrize("bad_id, expected", [
    ("Hoper-v5", "Hopper-v5"),
    ("dm_control/hopper-fly", "hopper-hop"),
    ("dm_control/nodomain-run", "walker-walk"),
    ("cyclefriction/Pendulum-v1", "MuJoCo"),
])
def test_bad_ids_fail_with_what_is_allowed(bad_id, expected):
    with pytest.raises(ValueError) as err:
        make_env(bad_id)
    assert bad_id in str(err.value) and expected in str(err.value)


@pytest.mark.parametrize("period", [0, -5])
def test_non_positive_friction_period_rejected(period):
    with pytest.raises(ValueError, match=f"friction_period .*{period}"):
        make_env("cyclefriction/Hopper-v5", friction_period=period)


@pytest.mark.parametrize("env_id, async_envs", [("Hopper-v5", False), ("cyclefriction/dm_control/hopper-hop", False),
                                                ("Pendulum-v1", False), ("Hopper-v5", True)])
def test_snapshot_restores_the_exact_future(env_id, async_envs):
    envs, _ = make_env(env_id, num_envs=2, seed=0, normalize=True, friction_period=30, async_envs=async_envs)
    rng = np.random.default_rng(1)
    for _ in range(25):
        envs.step(rng.uniform(-1, 1, size=envs.action_space.shape).astype(np.float32))
    state = get_env_state(envs)
    actions = rng.uniform(-1, 1, size=(60, *envs.action_space.shape)).astype(np.float32)
    first = [envs.step(a)[:2] for a in actions]
    fresh, _ = make_env(env_id, num_envs=2, seed=99, normalize=True, friction_period=30, async_envs=async_envs)
    set_env_state(fresh, state)
    second = [fresh.step(a)[:2] for a in actions]
    for (o1, r1), (o2, r2) in zip(first, second):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)


# Imported first by every Python started with this folder on PYTHONPATH: importing PyOpenGL's EGL
# module fails as it does on a machine without libEGL.
NO_EGL_SITECUSTOMIZE = '''
import sys

class NoEGL:
    def find_spec(self, name, path=None, target=None):
        if name == "OpenGL.EGL" or name.startswith("OpenGL.EGL."):
            raise AttributeError("'NoneType' object has no attribute 'eglQueryString'")

sys.meta_path.insert(0, NoEGL())
'''


def test_trains_on_a_machine_without_opengl(tmp_path, tiny):
    """Nothing renders, so nothing needs OpenGL: where EGL cannot load, MuJoCo and DMC tasks still
    train, while a user's own MUJOCO_GL still wins (here 'egl', which then fails as it should)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT, run_script

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_EGL_SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    check = [sys.executable, "-c", "import os, envs, mujoco, dm_control.suite; print(os.environ['MUJOCO_GL'])"]
    chosen = subprocess.run(check, cwd=ROOT, env={**env, "MUJOCO_GL": "egl"}, capture_output=True, text=True)
    assert chosen.returncode != 0 and "eglQueryString" in chosen.stderr  # the failure is reproduced
    assert subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True).stdout.strip() == "disable"
    for env_id in ("Hopper-v5", "dm_control/hopper-hop"):
        i = tiny.index("--env-id")
        args = tiny[:i] + ["--env-id", env_id] + tiny[i + 2:] + ["--total-timesteps", "512"]
        proc = run_script("ppo_continuous.py", *args, run_dir=tmp_path / env_id.replace("/", "_"), env=env)
        assert "update 1/1" in proc.stdout
