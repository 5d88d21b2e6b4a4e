"""make_env, the vector-level normalisation wrapper and exact env snapshots for resume."""

from __future__ import annotations

import difflib
import multiprocessing
import pickle
import signal

import gymnasium as gym
import numpy as np

from envs.dmc import DMC_PREFIX, DMCEnv, parse_dmc_id
from envs.friction import FRICTION_PREFIX, CycleFriction
from envs.render import RecordEpisodes

MUJOCO_IDS = (
    "Hopper-v5",
    "HalfCheetah-v5",
    "Walker2d-v5",
    "Ant-v5",
    "Humanoid-v5",
    "HumanoidStandup-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
    "Swimmer-v5",
    "Reacher-v5",
    "Pusher-v5",
)

ENV_ID_HELP = (
    "a gymnasium id with a Box action space (the paper's MuJoCo tasks: "
    + ", ".join(MUJOCO_IDS[:6])
    + "), a DeepMind Control task as 'dm_control/<domain>-<task>' (e.g. dm_control/hopper-hop), "
    "or either of those behind 'cyclefriction/' for the Cycle Friction task (e.g. cyclefriction/Hopper-v5)"
)


def validate_env_id(env_id: str) -> None:
    """Raise ValueError naming the bad id and what is allowed; build nothing."""
    base_id = env_id[len(FRICTION_PREFIX):] if env_id.startswith(FRICTION_PREFIX) else env_id
    if base_id.startswith(DMC_PREFIX):
        parse_dmc_id(base_id)  # raises with the list of DMC tasks
        return
    registered = sorted(gym.registry.keys())
    if base_id not in gym.registry:
        close = difflib.get_close_matches(base_id, registered, n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown env id {env_id!r}.{hint} Allowed: {ENV_ID_HELP}.")
    spec = gym.spec(base_id)
    if env_id.startswith(FRICTION_PREFIX) and "mujoco" not in str(spec.entry_point):
        raise ValueError(
            f"{env_id!r}: Cycle Friction needs a MuJoCo task, and {base_id!r} is not one. "
            f"Allowed: cyclefriction/ followed by one of {', '.join(MUJOCO_IDS)} or a dm_control/ task."
        )


def _make_single(env_id: str, num_envs: int, friction_period: int, start_step: int, video=None):
    """A thunk building one sub-env; `video` = (video_dir, every, size) makes it record episodes."""
    def thunk():
        if multiprocessing.parent_process() is not None:  # an async worker: Ctrl-C is the trainer's to handle
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        cyclic = env_id.startswith(FRICTION_PREFIX)
        base_id = env_id[len(FRICTION_PREFIX):] if cyclic else env_id
        render = {} if video is None else {"render_mode": "rgb_array"}
        if base_id.startswith(DMC_PREFIX):
            env = DMCEnv(*parse_dmc_id(base_id), **render, size=None if video is None else video[2])
        else:
            mujoco_task = "mujoco" in str(gym.spec(base_id).entry_point)
            if video is not None and mujoco_task:
                render.update(width=video[2], height=video[2])
            env = gym.make(base_id, **render)
            if video is not None and mujoco_task:
                import mujoco

                track = mujoco.mj_name2id(env.unwrapped.model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
                if track >= 0:  # the model's camera that follows the body (every locomotion task has one);
                    env.unwrapped.mujoco_renderer.camera_id = track  # the default free camera stays put
        if not isinstance(env.action_space, gym.spaces.Box):
            raise ValueError(f"env id {env_id!r} has a {type(env.action_space).__name__} action space; "
                             "these algorithms need a continuous (Box) action space")
        if cyclic:
            env = CycleFriction(env, period=friction_period, num_envs=num_envs, start_step=start_step)
        env = Snapshot(env)
        if video is not None:  # outside Snapshot: a checkpoint's env state is the same with or without it
            env = RecordEpisodes(env, video[0], video[1], num_envs, start_step)
        return env

    return thunk


def make_env(
    env_id: str,
    num_envs: int = 1,
    seed: int = 0,
    normalize: bool = False,
    gamma: float = 0.99,
    async_envs: bool = False,
    friction_period: int = 1_000_000,
    start_step: int = 0,
    clip_obs: float = 10.0,
    clip_reward: float = 10.0,
    video_dir: str | None = None,
    video_every: int = 1,
    video_size: int = 256,
    frozen_obs_stats: dict | None = None,
) -> "VecWrapper":
    """Build a vector env with SAME_STEP autoreset, reset it with `seed`.

    Returns (envs, first_obs). `normalize` adds the PPO chain: running observation
    normalisation clipped to +-clip_obs and return-based reward scaling clipped to
    +-clip_reward. Without it only actions are clipped and episode statistics kept
    (what SAC wants). `start_step` is the global env step the run starts at (resume),
    used by Cycle Friction's schedule. With `video_dir`, sub-env 0 renders (video_size pixels square) and
    records the first episode that starts after every `video_every` env steps as an MP4 there (see
    envs.render.RecordEpisodes); the step that ends one has its path in `infos["video"]`. Choose an OpenGL
    backend first (envs.choose_gl_backend). `frozen_obs_stats` (obs_mean, obs_var, obs_count, as a
    checkpoint's env state holds them) normalises observations with a run's statistics, never updated.
    """
    validate_env_id(env_id)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if friction_period <= 0:
        raise ValueError(f"friction_period must be a positive number of env steps, got {friction_period}")
    if video_dir is not None and (video_every < 1 or video_size < 2 or video_size % 2):
        raise ValueError(f"video_every must be >= 1 and video_size even, got {video_every} and {video_size}")
    video = None if video_dir is None else (video_dir, video_every, video_size)
    fns = [_make_single(env_id, num_envs, friction_period, start_step, video if i == 0 else None)
           for i in range(num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    vec_cls = gym.vector.AsyncVectorEnv if async_envs else gym.vector.SyncVectorEnv
    envs = VecWrapper(vec_cls(fns, autoreset_mode=mode), normalize, gamma, clip_obs, clip_reward)
    if frozen_obs_stats is not None:
        for key, value in frozen_obs_stats.items():
            setattr(envs, key, np.copy(value))
        envs.frozen = True
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    return envs, obs


def _update_moments(mean, var, count, batch):
    """Parallel (Chan et al.) update of running mean/variance with a batch on axis 0."""
    b_mean, b_var, b_count = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
    delta = b_mean - mean
    total = count + b_count
    new_mean = mean + delta * b_count / total
    m2 = var * count + b_var * b_count + delta**2 * count * b_count / total
    return new_mean, m2 / total, total


class VecWrapper(gym.vector.VectorWrapper):
    """Batched numpy wrapper: action clipping, episode statistics, optional PPO normalisation.

    gymnasium's vector NormalizeObservation refuses SAME_STEP autoreset, and the
    per-sub-env wrapper chain halves env throughput; this one wrapper does the whole
    chain on the batch. After a step where sub-env i ended, `infos["final_obs"]` is a
    dense float32 array (num_envs, obs_dim) whose row i is the episode's true last
    observation, normalised with the same statistics (not updating them), and
    `infos["episode"]` holds raw return "r" and length "l" masked by `infos["_episode"]`; a recorded
    episode's MP4 (make_env's video_dir) is `infos["video"]`. `frozen = True` stops the
    observation statistics from updating (evaluation with a run's saved statistics).
    """

    def __init__(self, env, normalize, gamma, clip_obs, clip_reward, epsilon=1e-8):
        super().__init__(env)
        shape = env.single_observation_space.shape
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.low = env.single_action_space.low.astype(np.float32)
        self.high = env.single_action_space.high.astype(np.float32)
        self.normalize, self.gamma, self.epsilon = normalize, gamma, epsilon
        self.clip_obs, self.clip_reward = clip_obs, clip_reward
        self.obs_mean, self.obs_var, self.obs_count = np.zeros(shape), np.ones(shape), 1e-4
        self.ret_mean, self.ret_var, self.ret_count = np.zeros(()), np.ones(()), 1e-4
        self.returns = np.zeros(self.num_envs)
        self.ep_return = np.zeros(self.num_envs)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self.frozen = False

    def _obs(self, obs, update):
        obs = np.asarray(obs, dtype=np.float64).reshape(len(obs), -1)
        if not self.normalize:
            return obs.astype(np.float32)
        if update and not self.frozen:
            self.obs_mean, self.obs_var, self.obs_count = _update_moments(self.obs_mean, self.obs_var, self.obs_count, obs)
        obs = (obs - self.obs_mean) / np.sqrt(self.obs_var + self.epsilon)
        return np.clip(obs, -self.clip_obs, self.clip_obs).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.returns[:] = 0
        self.ep_return[:] = 0
        self.ep_length[:] = 0
        return self._obs(obs, update=True), infos

    def step(self, actions):
        actions = np.clip(actions, self.low, self.high)
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        rewards = np.asarray(rewards, dtype=np.float64)
        self.ep_return += rewards
        self.ep_length += 1
        dones = terms | truncs
        if dones.any():
            final = np.stack([infos["final_obs"][i] if d else obs[i] for i, d in enumerate(dones)])
            infos["final_obs"] = self._obs(final, update=False)
            infos["episode"] = {"r": np.where(dones, self.ep_return, 0.0), "l": np.where(dones, self.ep_length, 0)}
            infos["_episode"] = dones
            if "video" in infos.get("final_info", {}):  # sub-env 0 recorded the episode that just ended
                infos["video"] = infos["final_info"]["video"][0]
            self.ep_return[dones] = 0
            self.ep_length[dones] = 0
        obs = self._obs(obs, update=True)
        if self.normalize:
            self.returns = self.returns * self.gamma * (1 - terms) + rewards
            self.ret_mean, self.ret_var, self.ret_count = _update_moments(
                self.ret_mean, self.ret_var, self.ret_count, self.returns[:, None])
            self.ret_var = np.asarray(self.ret_var).reshape(())
            self.returns[dones] = 0
            rewards = np.clip(rewards / np.sqrt(self.ret_var + self.epsilon), -self.clip_reward, self.clip_reward)
        return obs, rewards.astype(np.float32), terms, truncs, infos

    def normalize_obs(self, obs):
        """Normalise raw observations with the current statistics, without updating them."""
        return self._obs(obs, update=False)

    STATE_KEYS = ("obs_mean", "obs_var", "obs_count", "ret_mean", "ret_var", "ret_count",
                  "returns", "ep_return", "ep_length")

    def wrapper_state(self):
        return {k: np.copy(getattr(self, k)) for k in self.STATE_KEYS}

    def set_wrapper_state(self, state):
        for k in self.STATE_KEYS:
            setattr(self, k, np.copy(state[k]))


class Snapshot(gym.Wrapper):
    """Outermost per-sub-env wrapper whose `state` property captures everything that
    decides the env's future: the simulator data, the env's RNG, the time-limit counter
    and the state of our own wrappers. Restoring it continues bit-identically."""

    def _chain(self):
        env, chain = self.env, []
        while True:
            chain.append(env)
            if not isinstance(env, gym.Wrapper):
                return chain
            env = env.env

    @property
    def state(self):
        out = {}
        for i, e in enumerate(self._chain()):
            if isinstance(e, gym.wrappers.TimeLimit):
                out[f"{i}.elapsed_steps"] = e._elapsed_steps
            elif hasattr(e, "get_state"):  # our DMCEnv and CycleFriction
                out[f"{i}.own"] = e.get_state()
            elif hasattr(e, "data") and hasattr(e, "model"):  # gymnasium MuJoCo
                out[f"{i}.mjdata"] = pickle.dumps(e.data)
            elif not isinstance(e, gym.Wrapper):  # other envs, e.g. classic control
                out[f"{i}.attrs"] = {k: pickle.dumps(getattr(e, k)) for k in ("state", "last_u") if hasattr(e, k)}
            if not isinstance(e, gym.Wrapper) and e._np_random is not None:
                out[f"{i}.np_random"] = e.np_random.bit_generator.state
        return out

    @state.setter
    def state(self, state):
        import mujoco

        for i, e in enumerate(self._chain()):
            if f"{i}.elapsed_steps" in state:
                e._elapsed_steps = state[f"{i}.elapsed_steps"]
            if f"{i}.own" in state:
                e.set_state(state[f"{i}.own"])
            if f"{i}.mjdata" in state:
                mujoco.mj_copyData(e.data, e.model, pickle.loads(state[f"{i}.mjdata"]))
            for k, v in state.get(f"{i}.attrs", {}).items():
                setattr(e, k, pickle.loads(v))
            if f"{i}.np_random" in state:
                e.np_random.bit_generator.state = state[f"{i}.np_random"]


def get_env_state(envs: VecWrapper) -> dict:
    """Everything needed to continue `envs` exactly: normalisation statistics,
    episode accumulators and each sub-env's simulator/RNG state."""
    return {"wrapper": envs.wrapper_state(), "sub_envs": list(envs.env.get_attr("state"))}


def set_env_state(envs: VecWrapper, state: dict) -> None:
    envs.set_wrapper_state(state["wrapper"])
    envs.env.set_attr("state", state["sub_envs"])
