"""What the edge and cloud nodes share: a managed (ROS 2 lifecycle) node.

It has a config, a trainer with checkpoints, worker threads for the heavy work, rejection
counting and a diagnostics status.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path

import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.timer import Timer

from .core import checkpoint
from .ros_common import Intake, Rejections, declare_parameters, diagnostic, read_config, received_s

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class TrainerNode(LifecycleNode):
    """A managed node, brought up as nav2 brings up its nodes.

    - construction declares the parameters (settable before configure) and the diagnostics;
    - configure reads the parameters into the frozen config, builds the trainer, then the
      subclass's ``configure()`` (queues, lifecycle publishers: ``self.publisher``), resumes from
      the checkpoint (else loads the ``init_from`` weights) and warms up;
    - activate enables the publishers, starts one thread per entry of ``loops()``, then the
      subclass's ``activate()`` creates its subscriptions and timers (``self.subscription``,
      ``self.fast_subscription`` for a camera-rate stream, ``self.timer``);
    - deactivate destroys those subscriptions and timers, stops the threads, calls the
      subclass's ``deactivate()`` and writes a checkpoint; activate again resumes;
    - cleanup drops the trainer, the config, the publishers and what ``release()`` names;
      shutdown does what the state it leaves needs (from active: deactivate's work first).

    Subscriptions exist only while active, rather than callbacks that skip work when inactive:
    a paused robot then pays nothing for the camera stream (DDS stops delivering it), and a
    peer sees the node's readers go, as it would see the node go.

    With the ``autostart`` parameter (default true, nav2's name) the node configures and
    activates itself at construction, so subclasses build nothing in ``__init__``: everything
    belongs in ``configure()``.  Without it the node waits, unconfigured, for a lifecycle
    manager or ``ros2 lifecycle set``.

    Subclasses also set ``role``, build the trainer in ``make_trainer``, give the model's
    ``input_shape`` and do one round of work in ``work_once`` (which must wait briefly when idle).
    """

    role = "trainer"

    def __init__(self, name: str, config_cls):
        super().__init__(name)
        self.config_cls = config_cls
        self.config = None  # read at configure
        self.trainer = None
        autostart = self.declare_parameter("autostart", True).value
        # run_node's executor (make_executor), declared before autostart activates: a subscription may depend on it
        self.executor_name = self.declare_parameter("executor", getattr(self, "executor_kind", "single")).value
        declare_parameters(self, config_cls)
        self.rejections = Rejections(self)
        self.last_loss = float("nan")
        self._lock = threading.Lock()  # guards the trainer between the workers and checkpoints
        self._configured: list = []  # publishers made by configure, destroyed by cleanup
        self._activated: list = []  # subscriptions and timers made by activate, destroyed by deactivate
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failure: Exception | None = None
        # Diagnostics in every state, so a monitor sees a node that waits unconfigured.
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.publish_diagnostics)
        if autostart:
            for transition in (self.trigger_configure, self.trigger_activate):
                if transition() != SUCCESS:  # a bad parameter: refuse to start, as a plain node would
                    raise self._failure or RuntimeError(f"{name}: {transition.__name__} failed")

    # -- what subclasses implement --------------------------------------------------------------
    def make_trainer(self, spec, optim):
        raise NotImplementedError

    def work_once(self) -> None:
        raise NotImplementedError

    def input_shape(self) -> tuple:
        raise NotImplementedError

    def configure(self) -> None:
        """Build this side's state (after the trainer, before the checkpoint is restored)."""

    def activate(self) -> None:
        """Create the subscriptions and timers that exist while active."""

    def deactivate(self) -> None:
        """Drop what will be stale when the node is active again (threads are stopped)."""

    def release(self) -> None:
        """Drop what ``configure()`` built."""

    def loops(self) -> list[tuple]:
        """Return (step, what, pause_s[, nice]) per thread that runs while active.

        Each calls ``step()`` every ``pause_s``, at the thread's own ``nice`` value if given (Linux).
        """
        return [(self.work_once, f"{self.role} worker", 0.0)]

    def on_config_changed(self) -> None:
        pass

    # -- entities with the node's state -----------------------------------------------------------
    def publisher(self, msg_type, topic: str, qos):
        """Make a lifecycle publisher (silent unless active), in configure()."""
        pub = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._configured.append(pub)
        return pub

    def subscription(self, msg_type, topic: str, callback, qos):
        """Make a subscription that exists while active, in activate()."""
        sub = self.create_subscription(msg_type, topic, callback, qos)
        self._activated.append(sub)
        return sub

    def timed_subscription(self, msg_type, topic: str, callback, qos):
        """Make a subscription that exists while active, in activate(): ``callback(msg, received)``.

        ``received``: when the middleware received the message, in seconds on the system clock (``MessageInfo``);
        None under ``executor: events``, whose rclpy (Kilted) fails on a callback that takes MessageInfo
        ("SystemError: null argument to internal routine" in spin_once).
        """
        if self.executor_name == "events":
            return self.subscription(msg_type, topic, lambda msg: callback(msg, None), qos)
        return self.subscription(msg_type, topic, lambda msg, info: callback(msg, received_s(info)), qos)

    @property
    def intake_interval_s(self) -> float:
        """How often at most the intake thread wakes (0: for each message); a node whose config sets it says so."""
        return 0.0

    def fast_subscription(self, msg_type, topic: str, callback, qos):
        """Make a subscription that exists while active and is taken by the node's intake thread, in activate().

        For a camera-rate stream: :class:`~hiertrain_ros.ros_common.Intake` takes it for a fraction of the executor's
        CPU, waking at most every ``intake_interval_s``.  ``callback`` runs in that thread, beside the executor's
        callbacks and the workers.
        """
        intake = next((e for e in self._activated if isinstance(e, Intake)), None)
        if intake is None:
            intake = Intake(self, self.intake_interval_s)
            self._activated.append(intake)
        intake.subscribe(msg_type, topic, callback, qos)

    def timer(self, period_s: float, callback):
        """Make a timer that runs while active, in activate()."""
        timer = self.create_timer(period_s, callback)
        self._activated.append(timer)
        return timer

    @property
    def lifecycle_state(self) -> str:
        # rclpy has no public getter; its state machine's (id, label) is what GetState answers.
        return self._state_machine.current_state[1]

    # -- transitions ------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure, undo=self._release)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("activate", self._activate, undo=self._pause)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("deactivate", self._deactivate)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup", self._release)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        def shutdown():
            if state.label == "active":
                self._deactivate()
            if state.label != "unconfigured":
                self._release()
        return self._transition("shutdown", shutdown)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._pause()
        self._release()
        return SUCCESS  # back to unconfigured

    def _transition(self, what: str, do, undo=None) -> TransitionCallbackReturn:
        """Run a transition; name an exception and fail (rclpy would turn it into a silent error state)."""
        try:
            do()
        except Exception as exc:
            self._failure = exc
            self.get_logger().error(f"{what} failed: {exc}")
            if undo is not None:
                undo()
            return FAILURE
        self.get_logger().info(f"{what}: done")
        return SUCCESS

    def _configure(self) -> None:
        self.config = cfg = read_config(self, self.config_cls)  # ValueError on a bad value
        cfg.apply_threads()
        self.trainer = self.make_trainer(cfg.spec(), cfg.optim())
        self.checkpoint_path = Path(cfg.checkpoint_dir) / f"{self.role}.pt" if cfg.checkpoint_dir else None
        self.last_loss = float("nan")
        self.initialised_from = ""
        self.configure()
        if not self._resume() and cfg.init_from:
            self._init_from(cfg.init_from)
        self.warm_up()
        self.get_logger().info(f"{self.role} {self.trainer.model_id} ({self.trainer.model_hash:08x}): features "
                               f"{self.trainer.model.feature_shape}, {self.trainer.step} steps done")

    def _activate(self) -> None:
        super().on_activate(None)  # enables the lifecycle publishers
        # A fresh flag per activation: a thread that outlived an earlier deactivate's join
        # keeps the set flag it was started with, and ends.
        self._stop = stop = threading.Event()
        self._threads = [threading.Thread(target=self._keep_running, args=(stop, *loop), daemon=True,
                                          name=loop[1].replace(" ", "-")) for loop in self.loops()]
        for thread in self._threads:
            thread.start()
        self.activate()

    def _pause(self) -> None:
        """Stop the inputs first, then the threads, then the publishers."""
        for entity in self._activated:
            if isinstance(entity, Intake):
                entity.close()
            else:
                (self.destroy_timer if isinstance(entity, Timer) else self.destroy_subscription)(entity)
        self._activated.clear()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads.clear()
        super().on_deactivate(None)

    def _deactivate(self) -> None:
        self._pause()
        self.deactivate()
        self.save_checkpoint()

    def _release(self) -> None:
        self.release()
        for pub in self._configured:
            self.destroy_lifecycle_publisher(pub)
        self._configured.clear()
        self.trainer = self.config = None

    def warm_up(self) -> None:
        """Run a training and an answering pass on a throwaway copy before announcing ourselves.

        The first ones in a fresh process are slow (lazy initialisation) and would stall the
        first answers and heartbeats.
        """
        scratch = copy.deepcopy(self.trainer.model).train()
        outputs = scratch(torch.zeros(2, *self.input_shape()))
        sum(o.float().sum() for o in (outputs if isinstance(outputs, tuple) else (outputs,))).backward()
        with torch.no_grad():
            scratch.eval()(torch.zeros(1, *self.input_shape()))

    # -- checkpoints: the trainer's state plus what extra_state() adds --------------------------
    def extra_state(self) -> dict:
        return {}

    def restore_extra(self, state: dict) -> None:
        pass

    def _resume(self) -> bool:
        if self.checkpoint_path is None:
            return False
        state = checkpoint.load(self.checkpoint_path)  # ValueError for a damaged file: refuse to configure
        if state is None:
            return False
        self.trainer.load_state_dict(state)
        self.restore_extra(state)
        self.get_logger().info(f"resumed from {self.checkpoint_path} at step {self.trainer.step}")
        return True

    def _init_from(self, path: str) -> None:
        """Load trained weights, when there is no checkpoint to resume.

        ValueError (refuse to configure) for weights of another model.
        """
        weights, fresh = checkpoint.load_init(path, self.role, self.config.spec())
        self.trainer.load_weights(weights, fresh)
        self.initialised_from = path
        note = f" ({', '.join(p.rstrip('.') for p in fresh)} start fresh: not in a whole model)" if fresh else ""
        self.get_logger().info(f"initialised from {path}{note}")

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            with self._lock:
                state = {**self.trainer.state_dict(), **self.extra_state()}
            checkpoint.save(state, self.checkpoint_path)

    def checkpoint_due(self, step: int) -> None:
        if step % self.config.checkpoint_every == 0:
            self.save_checkpoint()

    # -- worker threads ----------------------------------------------------------------------------
    def _keep_running(self, stop: threading.Event, step, what: str, pause_s: float, nice: int = 0) -> None:
        """Call ``step`` every ``pause_s`` until ``stop`` is set (the body of each thread)."""
        if nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        while not stop.wait(pause_s):
            try:
                step()
            except Exception as exc:  # a bug must show, but must not silently stop the thread
                self.get_logger().error(f"{what}: {exc!r}", throttle_duration_sec=2.0)

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> dict:
        return {"steps": self.trainer.step, f"{self.role}_loss": self.last_loss, "init_from": self.initialised_from,
                "rejected": self.rejections.total,
                **{f"rejected_{k}": v for k, v in self.rejections.counts.items()}}

    def publish_diagnostics(self) -> None:
        values = {"lifecycle": self.lifecycle_state, **(self.status() if self.trainer is not None else {})}
        self.diagnostics_pub.publish(diagnostic(self, "training", values))

    def close(self) -> None:
        """Shut down from whatever state (Ctrl-C, SIGTERM): an active or inactive node writes its last checkpoint."""
        if self.lifecycle_state != "finalized":
            self.trigger_shutdown()
