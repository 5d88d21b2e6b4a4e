"""Cycle Friction (Section 5.1, Fig. 3 of the paper): the sliding friction of every geom
is the model's default times 4, 3, 2, 1, 2, 3, 4, 3, ..., the multiplier changing every
`period` environment steps counted over all sub-envs. It is applied when an episode
starts, never mid-episode. Ids: 'cyclefriction/<MuJoCo id>'."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

FRICTION_PREFIX = "cyclefriction/"
FRICTION_SCHEDULE = (4, 3, 2, 1, 2, 3)  # repeats: 4, 3, 2, 1, 2, 3, 4, 3, 2, ...


def friction_multiplier(global_step: int, period: int) -> int:
    """The friction multiplier in force at `global_step` env steps."""
    return FRICTION_SCHEDULE[(global_step // period) % len(FRICTION_SCHEDULE)]


class CycleFriction(gym.Wrapper):
    """Sub-envs of a vector env step in lockstep, so the global step count is this
    sub-env's own count times `num_envs`: exact, and it works in worker processes too."""

    def __init__(self, env, period: int, num_envs: int, start_step: int = 0):
        super().__init__(env)
        self.period, self.num_envs = period, num_envs
        self.model = env.unwrapped.model
        self.default_friction = np.array(self.model.geom_friction[:, 0])
        self.local_steps = start_step // num_envs
        self.multiplier = friction_multiplier(start_step, period)

    def _apply(self, multiplier: int) -> None:
        self.multiplier = multiplier
        self.model.geom_friction[:, 0] = self.default_friction * multiplier

    def reset(self, **kwargs):
        self._apply(friction_multiplier(self.local_steps * self.num_envs, self.period))
        obs, info = self.env.reset(**kwargs)
        info["friction"] = self.multiplier
        return obs, info

    def step(self, action):
        self.local_steps += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["friction"] = self.multiplier
        return obs, reward, terminated, truncated, info

    def get_state(self) -> dict:
        return {"local_steps": self.local_steps, "multiplier": self.multiplier}

    def set_state(self, state: dict) -> None:
        self.local_steps = state["local_steps"]
        self._apply(state["multiplier"])
