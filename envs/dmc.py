"""DeepMind Control adapter: a dm_control suite task as a gymnasium Env with a flat
float32 observation (the task's observation dict concatenated in its own order) and a
Box action space. Ids are 'dm_control/<domain>-<task>', e.g. 'dm_control/hopper-hop'."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np

DMC_PREFIX = "dm_control/"


def dmc_task_names() -> list[str]:
    from dm_control import suite

    return [f"{domain}-{task}" for domain, task in suite.ALL_TASKS]


def parse_dmc_id(env_id: str) -> tuple[str, str]:
    """'dm_control/hopper-hop' -> ('hopper', 'hop'); ValueError listing the tasks otherwise."""
    name = env_id[len(DMC_PREFIX):]
    domain, _, task = name.partition("-")
    names = dmc_task_names()
    if name not in names:
        raise ValueError(
            f"unknown DeepMind Control task {env_id!r} (domain {domain!r}, task {task!r}). "
            f"Ids are '{DMC_PREFIX}<domain>-<task>'; allowed: {', '.join(names)}"
        )
    return domain, task


class DMCEnv(gym.Env):
    """One dm_control task. A time-limit end (discount 1) is a truncation, an end with
    discount 0 a termination; episodes are the suite's 1000 steps."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, domain: str, task: str, render_mode: str | None = None, size: int | None = None):
        from dm_control import suite

        self._env = suite.load(domain, task)
        self.render_mode, self.size = render_mode, size or 256
        dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(spec.minimum.astype(np.float32), spec.maximum.astype(np.float32),
                                           dtype=np.float32)

    @property
    def model(self):
        """The MuJoCo model (geom_friction etc.), as gymnasium's MuJoCo envs expose it."""
        return self._env.physics.model

    @staticmethod
    def _flat(observation) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in observation.values()])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        return self._flat(self._env.reset().observation), {}

    def step(self, action):
        ts = self._env.step(action)
        terminated = bool(ts.last() and ts.discount == 0.0)
        truncated = bool(ts.last() and not terminated)
        return self._flat(ts.observation), float(ts.reward or 0.0), terminated, truncated, {}

    def render(self):
        """The task's first camera (the suite's tracking view), size x size RGB."""
        return self._env.physics.render(self.size, self.size, camera_id=0)

    def close(self):
        self._env.physics.free()  # its OpenGL context, if it rendered: freed now, not at interpreter exit

    def get_state(self) -> dict:
        env = self._env
        return {"mjdata": pickle.dumps(env.physics.data.ptr), "step_count": env._step_count,
                "reset_next_step": env._reset_next_step, "task_random": env.task.random.get_state()}

    def set_state(self, state: dict) -> None:
        import mujoco

        env = self._env
        mujoco.mj_copyData(env.physics.data.ptr, env.physics.model.ptr, pickle.loads(state["mjdata"]))
        env._step_count = state["step_count"]
        env._reset_next_step = state["reset_next_step"]
        env.task.random.set_state(state["task_random"])
