"""Videos of a run's deployed policy: ``python -m marlopt.evaluate run=<dir> render=true``.

:func:`render_policy` plays greedy episodes of a :class:`~marlopt.policy.Policy` one after another
in one env and writes them as one GIF (Pillow) or MP4 (imageio with imageio-ffmpeg). Frames: one of
the initial state of each episode, then one after every env step, so an episode of ``T`` steps
gives ``T + 1`` frames; a caption strip under each frame says the episode, the step and the return
so far (it also keeps every frame distinct: GIF writers merge identical consecutive frames).

The first episode's env is reset with the evaluation's first seed and the next ones continue its
RNG, exactly as env 0 of ``python -m marlopt.evaluate`` runs them: the video shows the first
episodes that evaluation measured (greedy policies are deterministic).

Envs with a frame renderer (:data:`RENDERABLE_ENVS`):

- ``mpe``: mpe2's own ``rgb_array`` renderer (``MPEEnv.render``), 700×700.
- ``smax``: drawn here with Pillow from the units (``SMAXEnv.render_units``), one frame per env
  step. JaxMARL's ``SMAXVisualizer`` is not used: it needs matplotlib, draws each frame through
  un-jitted JAX calls and interpolates the 8 world ticks of every env step into 9 frames.

StarCraft II (``smac``, ``smacv2``) records replays instead (``env.options.save_replay=true``,
docs/videos.md); GRF and the matrix games have no renderer here. imageio and Pillow are imported
only when a video is written (``pip install -e ".[render]"``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from marlopt.config import ConfigError

RENDERABLE_ENVS = ("mpe", "smax")
FORMATS = ("gif", "mp4")
INSTALL = 'pip install -e ".[render]"'
#: Frames per second of the video, per env (MPE: mpe2's ``render_fps``; SMAX: one env step = 1/2 s of game).
FPS = {"mpe": 10, "smax": 4}
SMAX_SIZE = 512  # pixels of the square SMAX map
CAPTION_HEIGHT = 24  # pixels of the caption strip under each frame


def check_render_packages(fmt: str) -> None:
    """``fmt`` is a known format and the packages that write it are installed (nothing imported):
    ``ConfigError`` / ``ImportError`` in one line with the fix."""
    if fmt not in FORMATS:
        raise ConfigError(f"render_format: must be one of {', '.join(FORMATS)} (got {fmt!r})")
    missing = [name for name, module in (("imageio", "imageio"), ("Pillow", "PIL"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"render=true needs {' and '.join(missing)}; install them with: {INSTALL}")
    if fmt == "mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ImportError(f"render_format=mp4 needs imageio-ffmpeg; install it with: {INSTALL} "
                          "(or use render_format=gif)")


def check_renderable(env_name: str) -> None:
    """``env_name`` has a frame renderer (:data:`RENDERABLE_ENVS`), else ``ConfigError`` in one line."""
    if env_name in RENDERABLE_ENVS:
        return
    hint = ""
    if env_name in ("smac", "smacv2"):
        hint = ("; StarCraft II records replays instead: train or evaluate a run made with "
                "env.options.save_replay=true (docs/videos.md)")
    raise ConfigError(f"render=true: env={env_name} has no frame renderer; videos are made for "
                      f"env={' and env='.join(RENDERABLE_ENVS)}{hint}")


# ---------------------------------------------------------------------------------- frames
def draw_smax(units: dict[str, Any], size: int = SMAX_SIZE) -> np.ndarray:
    """An RGB frame ``[size, size, 3]`` of an SMAX battle (``SMAXEnv.render_units``): allies blue,
    enemies red, a health bar over each live unit, a line from each unit to the one it attacked
    in the last step, a grey cross where a unit died."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    sx, sy = size / units["width"], size / units["height"]

    def pixel(p: np.ndarray) -> tuple[float, float]:
        return float(p[0]) * sx, size - float(p[1]) * sy  # SMAX's y axis points up

    positions, alive, n = units["positions"], units["alive"], units["n_allies"]
    for i, j in enumerate(units["target"].tolist()):
        if alive[i] and 0 <= j < len(alive):
            draw.line([pixel(positions[i]), pixel(positions[j])], fill=(120, 120, 120), width=1)
    for i, p in enumerate(positions):
        x, y = pixel(p)
        r = max(3.0, float(units["radius"][i]) * sx)
        if not alive[i]:
            draw.line([(x - r, y - r), (x + r, y + r)], fill=(170, 170, 170), width=2)
            draw.line([(x - r, y + r), (x + r, y - r)], fill=(170, 170, 170), width=2)
            continue
        colour = (40, 90, 200) if i < n else (200, 50, 40)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
        health = float(np.clip(units["health"][i], 0.0, 1.0))
        draw.rectangle([x - r, y - r - 5, x + r, y - r - 2], fill=(200, 200, 200))
        draw.rectangle([x - r, y - r - 5, x - r + 2 * r * health, y - r - 2], fill=(40, 170, 60))
        draw.text((x - 3, y - 6), units["shorthand"][i], fill=(255, 255, 255))
    return np.asarray(image)


def env_frame(env: Any) -> np.ndarray:
    """The env's current state as an RGB frame ``[H, W, 3]`` (uint8)."""
    if hasattr(env, "render_units"):
        return draw_smax(env.render_units())
    return np.ascontiguousarray(env.render(), dtype=np.uint8)


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with a white strip under it that holds ``text``."""
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    image = Image.new("RGB", (w, h + CAPTION_HEIGHT), (255, 255, 255))
    image.paste(Image.fromarray(frame[..., :3]), (0, 0))
    ImageDraw.Draw(image).text((6, h + 6), text, fill=(0, 0, 0))
    return np.asarray(image)


# ---------------------------------------------------------------------------------- rollout
def rollout_frames(policy: Any, make_env: Callable[[], Any], episodes: int, seed: int,
                   greedy: bool = True) -> tuple[list[np.ndarray], list[dict[str, float]]]:
    """Play ``episodes`` episodes of ``policy`` in one env made by ``make_env`` (the first reset
    with ``seed``, the next ones continuing the env's RNG) and collect the captioned frames:
    ``T + 1`` per episode of ``T`` steps. Returns the frames and each episode's ``return``,
    ``length`` (and ``won`` where the env has wins)."""
    import torch

    env = make_env()
    frames: list[np.ndarray] = []
    stats: list[dict[str, float]] = []
    centralised = getattr(policy, "centralised", False)
    try:
        with torch.inference_mode():
            for k in range(episodes):
                obs, env_state, avail = env.reset(seed if k == 0 else None)
                memory = policy.initial_state(1)
                ret, length, done = 0.0, 0, False
                frames.append(caption(env_frame(env), f"episode {k + 1}/{episodes}  step 0  return 0.00"))
                while not done:
                    extra = {"env_state": env_state[None]} if centralised else {}
                    # copies: the env's outputs may be read-only views (torch warns on those)
                    actions, memory = policy.act(np.array(obs[None]), np.array(avail[None]), memory,
                                                 greedy=greedy, **extra)
                    step = env.step(actions[0])
                    ret, length = ret + float(step.reward), length + 1
                    done = bool(step.terminated or step.truncated)
                    obs, env_state, avail = step.obs, step.state, step.avail
                    frames.append(caption(env_frame(env),
                                          f"episode {k + 1}/{episodes}  step {length}  return {ret:.2f}"))
                episode = {"return": ret, "length": float(length)}
                if env.spec.has_won:
                    episode["won"] = float(bool(step.info.get("won", False)))
                stats.append(episode)
    finally:
        env.close()
    return frames, stats


def write_video(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """Write ``frames`` (RGB, equal sizes) as a looping GIF (Pillow) or an MP4 (imageio-ffmpeg),
    by ``path``'s suffix, through a temporary file (a killed write leaves no half video)."""
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    else:
        import imageio.v2 as imageio

        imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)
    tmp.replace(path)
    return path


def render_policy(policy: Any, env_name: str, make_env: Callable[[], Any], path: Path, episodes: int = 1,
                  seed: int = 0, greedy: bool = True) -> dict[str, Any]:
    """Render ``episodes`` episodes of ``policy`` to ``path`` (``.gif`` or ``.mp4``); returns the
    video's path, its frame count and the episodes' returns and lengths."""
    check_renderable(env_name)
    check_render_packages(path.suffix.lstrip("."))
    frames, stats = rollout_frames(policy, make_env, episodes, seed, greedy)
    write_video(frames, path, FPS[env_name])
    return {"path": str(path), "frames": len(frames), "episodes": stats}
