"""What the edge and cloud nodes share: a config, a trainer with checkpoints, a worker
thread for the heavy work, rejection counting and a diagnostics status."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from .core import checkpoint
from .ros_common import Rejections, declare_config, diagnostic


class TrainerNode(Node):
    """Subclasses set ``role``, build ``self.trainer`` in ``make_trainer``, give the model's
    ``input_shape`` and do one round of work in ``work_once`` (which must wait briefly when
    idle), then call ``start()`` at the end of their constructor."""

    role = "trainer"

    def __init__(self, name: str, config_cls):
        super().__init__(name)
        self.config = cfg = declare_config(self, config_cls)
        cfg.apply_threads()
        self.trainer = self.make_trainer(cfg.spec(), cfg.optim())
        self.checkpoint_path = Path(cfg.checkpoint_dir) / f"{self.role}.pt" if cfg.checkpoint_dir else None
        self.rejections = Rejections(self)
        self.last_loss = float("nan")
        self._lock = threading.Lock()  # guards the trainer between the worker and checkpoints
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name=f"{self.role}-worker", daemon=True)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.publish_diagnostics)

    def make_trainer(self, spec, optim):
        raise NotImplementedError

    def work_once(self) -> None:
        raise NotImplementedError

    def input_shape(self) -> tuple:
        raise NotImplementedError

    def start(self) -> None:
        """Resume from the last checkpoint, warm up, start the worker (end of the subclass's __init__)."""
        self._resume()
        self.warm_up()
        self._worker.start()
        self.get_logger().info(f"{self.role} {self.trainer.model_id} ({self.trainer.model_hash:08x}): features "
                               f"{self.trainer.model.feature_shape}, {self.trainer.step} steps done")

    def warm_up(self) -> None:
        """A training and an answering pass on a throwaway copy before announcing ourselves:
        the first ones in a fresh process are slow (lazy initialisation) and would stall the
        first answers and heartbeats."""
        scratch = copy.deepcopy(self.trainer.model).train()
        outputs = scratch(torch.zeros(2, *self.input_shape()))
        sum(o.float().sum() for o in (outputs if isinstance(outputs, tuple) else (outputs,))).backward()
        with torch.no_grad():
            scratch.eval()(torch.zeros(1, *self.input_shape()))

    def on_config_changed(self) -> None:
        pass

    # -- checkpoints: the trainer's state plus what extra_state() adds --------------------------
    def extra_state(self) -> dict:
        return {}

    def restore_extra(self, state: dict) -> None:
        pass

    def _resume(self) -> None:
        if self.checkpoint_path is None:
            return
        state = checkpoint.load(self.checkpoint_path)  # ValueError for a damaged file: refuse to start
        if state is not None:
            self.trainer.load_state_dict(state)
            self.restore_extra(state)
            self.get_logger().info(f"resumed from {self.checkpoint_path} at step {self.trainer.step}")

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            with self._lock:
                state = {**self.trainer.state_dict(), **self.extra_state()}
            checkpoint.save(state, self.checkpoint_path)

    def checkpoint_due(self, step: int) -> None:
        if step % self.config.checkpoint_every == 0:
            self.save_checkpoint()

    # -- worker thread -------------------------------------------------------------------------
    def _work(self) -> None:
        self.keep_running(self.work_once, f"{self.role} worker")

    def keep_running(self, step, what: str, pause_s: float = 0.0) -> None:
        """Call ``step`` every ``pause_s`` until the node stops (the body of each of its threads)."""
        while not self._stop.wait(pause_s):
            try:
                step()
            except Exception as exc:  # a bug must show, but must not silently stop the thread
                self.get_logger().error(f"{what}: {exc!r}", throttle_duration_sec=2.0)

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> dict:
        return {"steps": self.trainer.step, f"{self.role}_loss": self.last_loss, "rejected": self.rejections.total,
                **{f"rejected_{k}": v for k, v in self.rejections.counts.items()}}

    def publish_diagnostics(self) -> None:
        self.diagnostics_pub.publish(diagnostic(self, "training", self.status()))

    def close(self) -> None:
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        self.save_checkpoint()
