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

Nothing renders unless a run asks for videos, so unless the user chose a backend, MuJoCo and
dm_control load no OpenGL library (MUJOCO_GL=disable): with 'egl' or 'osmesa' importing them
fails on machines without that library (slim containers, many GPU and cluster nodes). A run that
renders calls :func:`choose_gl_backend` first, which finds one that works (the user's own
MUJOCO_GL wins) or says what to install.
"""

import os

# The default is marked as ours, so that a process started from this one (a test, reproduce.py's workers),
# inheriting it, does not take it for the user's choice.
if "MUJOCO_GL" not in os.environ:
    os.environ["MUJOCO_GL"] = os.environ["ENVS_DEFAULT_MUJOCO_GL"] = "disable"
# MUJOCO_GL as the user set it (None: not set)
_ours = os.environ["MUJOCO_GL"] == os.environ.get("ENVS_DEFAULT_MUJOCO_GL")
USER_MUJOCO_GL = None if _ours else os.environ["MUJOCO_GL"]

from envs.core import ENV_ID_HELP, MUJOCO_IDS, get_env_state, make_env, set_env_state, validate_env_id
from envs.friction import FRICTION_SCHEDULE, friction_multiplier
from envs.render import encode_gif, log_video, read_mp4, write_mp4
from envs.render import choose_gl_backend as _choose_gl_backend


def choose_gl_backend(flag: str) -> str:
    """Set MUJOCO_GL to an OpenGL backend that renders (the user's own MUJOCO_GL if set), before MuJoCo or
    dm_control is imported; ValueError with one line naming MUJOCO_GL and what to install otherwise."""
    return _choose_gl_backend(USER_MUJOCO_GL, flag)


__all__ = [
    "FRICTION_SCHEDULE",
    "choose_gl_backend",
    "encode_gif",
    "log_video",
    "read_mp4",
    "write_mp4",
    "ENV_ID_HELP",
    "MUJOCO_IDS",
    "friction_multiplier",
    "get_env_state",
    "make_env",
    "set_env_state",
    "validate_env_id",
]
