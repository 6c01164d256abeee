"""Runners: one per algorithm family (``on_policy`` now; ``off_policy`` registers the same way).

``python -m marlopt.train`` builds the runner that ``marlopt.algos.registry`` names for the
algorithm's ``family``; every runner satisfies :class:`Runner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Runner(Protocol):
    """What ``marlopt.train`` needs of a runner.

    Built as ``Runner(cfg, run_dir, resume_payload)``: ``cfg`` the validated ``TrainConfig``,
    ``resume_payload`` the loaded checkpoint to continue from (``None`` for a fresh run).
    """

    frames: int  # env frames trained on so far (resumed runs: including earlier calls)
    total_frames: int  # frames at which training ends

    def __init__(self, cfg: Any, run_dir: Path, resume_payload: dict[str, Any] | None = None) -> None: ...

    def train(self, logger: Any) -> str:
        """Train until ``total_frames`` (or a stop); log through ``logger`` (``marlopt.logger.RunLogger``),
        write checkpoints; return why it stopped (``"finished"`` when it reached the end)."""

    def close(self) -> None:
        """Release the envs."""
