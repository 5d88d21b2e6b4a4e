"""Environment construction shared by every algorithm file.

The only code the algorithm files share. One entry point, :func:`make_env`, builds a
gymnasium 1.x vector environment with SAME_STEP autoreset for three kinds of ids:

* gymnasium MuJoCo ids, e.g. ``Hopper-v5`` (any registered gymnasium id with a Box
  action space works, e.g. ``Pendulum-v1`` for quick tests);
* DeepMind Control state-based tasks as ``dm_control/<domain>-<task>``, e.g.
  ``dm_control/hopper-hop``, ``dm_control/humanoid-stand``, ``dm_control/ball_in_cup-catch``;
* Cycle Friction (Section 5.1 of the paper) on any MuJoCo task as
  ``cyclefriction/<id>``, e.g. ``cyclefriction/Hopper-v5`` or
  ``cyclefriction/dm_control/walker-walk``.

Nothing here renders, so unless the user chose a backend, MuJoCo and dm_control load no
OpenGL library (MUJOCO_GL=disable): with 'egl' or 'osmesa' importing them fails on machines
without that library (slim containers, many GPU and cluster nodes).
"""

import os

os.environ.setdefault("MUJOCO_GL", "disable")

from envs.core import ENV_ID_HELP, MUJOCO_IDS, get_env_state, make_env, set_env_state, validate_env_id
from envs.friction import FRICTION_SCHEDULE, friction_multiplier

__all__ = [
    "FRICTION_SCHEDULE",
    "ENV_ID_HELP",
    "MUJOCO_IDS",
    "friction_multiplier",
    "get_env_state",
    "make_env",
    "set_env_state",
    "validate_env_id",
]
