"""Rendering: choosing an OpenGL backend, recording episodes to MP4, GIFs for TensorBoard and the README.

Training never renders unless asked (--capture-video; evaluate.py --video / --gif), so MUJOCO_GL
defaults to 'disable' (envs/__init__.py) and machines without OpenGL keep working. When a run does
render, :func:`choose_gl_backend` picks a backend that works before MuJoCo or dm_control is
imported (dm_control reads MUJOCO_GL when it is imported), or says in one line what to install.
"""

from __future__ import annotations

import atexit
import io
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np

GL_BACKENDS = ("egl", "osmesa", "glfw")  # tried in this order when the user has not set MUJOCO_GL
VIDEO_FPS = 30  # frames per second of the MP4s (MuJoCo tasks step at 67-125 Hz: videos play slower than real time)
GIF_MAX_FRAMES = 200  # a GIF keeps at most this many frames, evenly spaced (a TensorBoard GIF stays small)

# Creates a context and MuJoCo's render context on it: what rendering needs, and what fails without OpenGL.
_PROBE = ("import mujoco; c = mujoco.GLContext(16, 16); c.make_current(); "
          "mujoco.MjrContext(mujoco.MjModel.from_xml_string('<mujoco/>'), 150).free(); c.free()")


def _probe(backend: str) -> str | None:
    """None when MuJoCo renders with MUJOCO_GL=backend (tried in a fresh interpreter, since OpenGL's platform
    cannot change within a process once loaded); otherwise the last line of its error."""
    env = {**os.environ, "MUJOCO_GL": backend}
    env.pop("PYOPENGL_PLATFORM", None)  # mujoco sets the one that goes with the backend
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


def choose_gl_backend(user_value: str | None, flag: str) -> str:
    """Set MUJOCO_GL to a backend that renders and return it; call before MuJoCo or dm_control is imported.

    user_value is MUJOCO_GL as the user set it (None: not set): it wins when set, and is only checked.
    Raises ValueError with one line naming MUJOCO_GL, why it does not render and what to install;
    `flag` is the option that asked for rendering, named in that line.
    """
    install = ("install EGL (Debian/Ubuntu: apt-get install libegl1; on a GPU node the driver's libEGL) and set "
               "MUJOCO_GL=egl, or OSMesa (apt-get install libosmesa6) and set MUJOCO_GL=osmesa")
    if user_value is not None and user_value.strip().lower() in ("disable", "disabled", "off", "false", "0"):
        raise ValueError(f"{flag} renders, and MUJOCO_GL={user_value} turns rendering off: unset MUJOCO_GL (a "
                         f"working backend is then chosen) or set it to one of {', '.join(GL_BACKENDS)}")
    candidates = [user_value] if user_value is not None else list(GL_BACKENDS)
    failures = []
    for backend in candidates:
        error = _probe(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            return backend
        failures.append(f"MUJOCO_GL={backend}: {error}")
    raise ValueError(f"{flag} needs OpenGL, and MuJoCo cannot render here ({'; '.join(failures)}); {install}")


def write_mp4(path: str, frames) -> None:
    """Frames (height, width, 3) uint8 as an H.264 MP4 at VIDEO_FPS (imageio's ffmpeg plugin)."""
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=VIDEO_FPS, macro_block_size=1, ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(np.asarray(frame))


def read_mp4(path: str) -> np.ndarray:
    """The frames of an MP4, (frames, height, width, 3) uint8."""
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="ffmpeg") as reader:
        return np.stack(list(reader.iter_data()))


def encode_gif(frames, fps: float = VIDEO_FPS) -> bytes:
    """An animated, looping GIF of at most GIF_MAX_FRAMES of the frames (evenly spaced, played at the
    pace of the whole), as bytes."""
    from PIL import Image

    frames = list(frames)
    keep = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), GIF_MAX_FRAMES)).round().astype(int))
    images = [Image.fromarray(np.asarray(frames[i])) for i in keep]
    buffer = io.BytesIO()
    duration = max(20, round(1000 * len(frames) / (fps * len(keep))))  # ms per kept frame
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return buffer.getvalue()


def log_video(writer, tag: str, path: str, step: int) -> None:
    """Log an MP4 to TensorBoard (SummaryWriter `writer`) as an animated GIF, as SummaryWriter.add_video
    does, without needing moviepy. W&B's TensorBoard sync shows it too."""
    from torch.utils.tensorboard.summary import Summary

    frames = read_mp4(path)
    height, width = frames.shape[1:3]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encode_gif(frames))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


class RecordEpisodes(gym.Wrapper):
    """Records whole episodes of one sub-env as MP4s in `video_dir`: the first episode that starts once
    every `every` environment steps have passed (counted over all `num_envs` sub-envs, which step in
    lockstep, as Cycle Friction counts them), named by the step it started at. The step that ends a
    recorded episode has info["video"], the MP4's path. It only reads the simulator to render, so the
    run is the same with or without it; it sits outside Snapshot and keeps no state a checkpoint needs
    (it starts from `start_step`), so a run may be resumed with or without it."""

    def __init__(self, env, video_dir: str, every: int, num_envs: int, start_step: int = 0):
        super().__init__(env)
        self.video_dir, self.every, self.num_envs = video_dir, every, num_envs
        self.local_steps = start_step // num_envs
        self.next_at = -(-start_step // every) * every  # the first multiple of `every` at or after start_step
        self.frames, self.started_at, self._closed, self._rendered = None, 0, False, False
        os.makedirs(video_dir, exist_ok=True)

    def _render(self):
        frame = self.env.render()
        if not self._closed and not self._rendered:  # after the first render, which sets OpenGL up: then this
            self._rendered = True  # runs before OpenGL's own exit handlers, freeing the context while it can
            atexit.register(self.close)
        return frame

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.frames = None  # an episode cut short by a reset is not kept
        step = self.local_steps * self.num_envs
        if step >= self.next_at:
            self.frames, self.started_at = [self._render()], step
            self.next_at = (step // self.every + 1) * self.every
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.local_steps += 1
        if self.frames is not None:
            self.frames.append(self._render())
            if terminated or truncated:
                path = os.path.join(self.video_dir, f"step-{self.started_at:010d}.mp4")
                write_mp4(path, self.frames)
                self.frames, info["video"] = None, path
        return obs, reward, terminated, truncated, info

    def close(self):
        self.frames = None
        if not self._closed:
            self._closed = True
            super().close()
