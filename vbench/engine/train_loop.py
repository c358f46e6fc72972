"""The training loop: epochs of optimizer steps, with hooks (detectron2's train_loop.py is the model).

`TrainLoop.train` runs the epochs and calls every hook at six points (`HookBase`); `Trainer` adds
the step: TRAIN.ACCUM_STEPS micro-batches (forward, loss, backward), then the optimizer. Everything
periodic (the LR, progress, statistics, bad videos, evaluation, the benchmark clock, writers,
checkpoints) is a hook in hooks.py, and `defaults.build_trainer` assembles the trainer with them.
The loop and the hooks put what they measure into `self.storage` (events.py), which writers read.
Nothing here reads a device value back to the host.
"""
import math
import weakref
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from vbench.engine import distributed as du
from vbench.engine.checkpoint import Checkpointer, capture_rng_state, model_state, restore_rng_state, seed_everything
from vbench.engine.events import EventStorage
from vbench.engine.log import get_logger
from vbench.engine.lr_policy import LRSchedule
from vbench.engine.meters import TrainMeter, WaitTimer
from vbench.engine.optimizer import build_optimizer, clip_gradients
from vbench.engine.precision import make_autocast, resolve_precision


class HookBase:
    """One periodic concern of training. Override the stages you need; each runs on every process,
    in the order the hooks were registered (`defaults.default_hooks` says why that order).

    `self.trainer` is a weak reference to the trainer (set by `register_hooks`): a hook reads the
    trainer's parts (model, optimizer, loaders, ctx, cfg) and its position (`epoch`, 0-based;
    `iter`, the step within the epoch, 0-based; `iters_per_epoch`, `max_epoch`), and puts what it
    measures into `trainer.storage` for the hooks after it and the writers.
    """

    trainer = None

    def before_train(self):
        """Once, before the first epoch (also when resuming). The benchmark clock has not started."""

    def before_epoch(self):
        """Before the epoch's first batch is requested; `storage.epoch_record` is new and empty."""

    def before_step(self):
        """Before each optimizer step (`trainer.iter`)."""

    def after_step(self):
        """After each optimizer step: the gradients are applied."""

    def after_epoch(self):
        """After the epoch's last step; hooks earlier in the list have filled `storage.epoch_record`."""

    def after_train(self):
        """Once, at the end, also when training failed (`trainer.failure` holds the exception)."""

    def state_dict(self):
        """What this hook needs in a checkpoint to resume: {checkpoint key: plain value}, or {}."""
        return {}

    def load_state_dict(self, state):
        """Restore from a checkpoint dict (the whole dict: read your own keys)."""


class TrainLoop:
    """Epochs of steps with hooks. Subclasses set `iters_per_epoch`, `max_epoch`, `start_epoch`
    and implement `run_epoch`."""

    def __init__(self):
        self.hooks = []
        self.storage = EventStorage()
        self.start_epoch = 0
        self.epoch = 0
        self.iter = 0
        self.max_epoch = 0
        self.iters_per_epoch = 0
        self.stop_requested = False  # a hook asks the loop to end after this epoch
        self.failure = None

    def register_hooks(self, hooks):
        for hook in hooks:
            hook.trainer = weakref.proxy(self)
        self.hooks.extend(hooks)

    def call_hooks(self, stage):
        for hook in self.hooks:
            getattr(hook, stage)()

    @property
    def finished(self):
        return self.stop_requested or self.start_epoch >= self.max_epoch

    def train(self):
        """Run the remaining epochs; `after_train` runs even when training fails."""
        self.storage.max_epoch, self.storage.iters_per_epoch = self.max_epoch, self.iters_per_epoch
        try:
            self.call_hooks("before_train")
            for self.epoch in range(self.start_epoch, self.max_epoch):
                if self.stop_requested:
                    break
                self.storage.begin_epoch(self.epoch + 1)
                self.call_hooks("before_epoch")
                self.run_epoch()
                self.call_hooks("after_epoch")
        except BaseException as err:
            self.failure = self.storage.failure = err
            raise
        finally:
            self.call_hooks("after_train")

    def run_epoch(self):
        raise NotImplementedError


class Trainer(TrainLoop):
    """The video trainer's step: TRAIN.ACCUM_STEPS micro-batches per optimizer step, with the
    precision's autocast and grad scaler, DDP's gradient sync on the last micro-batch only.

    `models` is `(train_model, eval_model, bare_model)` from `defaults.prepare_model`.
    """

    def __init__(self, cfg, ctx, models, train_loader, val_loader):
        super().__init__()
        self.cfg, self.ctx = cfg, ctx
        self.output_dir = cfg.OUTPUT_DIR
        self.model, self.eval_model, self.bare_model = models
        self.train_loader, self.val_loader = train_loader, val_loader
        self.accum_steps = cfg.TRAIN.ACCUM_STEPS
        self.iters_per_epoch = math.ceil(len(train_loader) / self.accum_steps)
        self.max_epoch = cfg.SOLVER.MAX_EPOCH
        self.optimizer = build_optimizer(self.bare_model, cfg)
        self.schedule = LRSchedule(cfg, self.iters_per_epoch)
        self.precision = resolve_precision(cfg.TRAIN.PRECISION, ctx.device)
        self.autocast = make_autocast(self.precision, ctx.device)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.precision == "fp16")
        self.checkpointer = Checkpointer(self.output_dir, cfg.TRAIN.CHECKPOINT_KEEP, ctx.is_main)
        self.meter = TrainMeter(ctx.device)
        self.wait_timer = WaitTimer()
        self.saved_progress = None  # from a checkpoint taken inside an epoch (preemption.py)

    def run_epoch(self):
        self.meter.reset_epoch()
        self.train_loader.set_epoch(self.epoch)
        self.wait_timer.reset()
        self.model.train()
        batches = iter(self.train_loader)
        first, remaining = self.skip_saved_steps(batches)
        for self.iter in range(first, self.iters_per_epoch):
            self.storage.step = self.epoch * self.iters_per_epoch + self.iter + 1
            self.call_hooks("before_step")
            micro = min(self.accum_steps, remaining)
            for index in range(micro):
                self.train_micro_batch(self.next_batch(batches), sync=index == micro - 1, scale=1.0 / micro)
            remaining -= micro
            self.optimizer_step()
            self.storage.iter = self.iter + 1
            self.call_hooks("after_step")

    def skip_saved_steps(self, batches):
        """(first step, loader batches left) of this epoch. After a checkpoint taken inside it
        (`saved_progress`), the batches of the steps it holds are read again and dropped, so the
        remaining steps get the batches of an uninterrupted run; then this process's meters, wait
        timer and random streams go back to their saved state."""
        progress, self.saved_progress = self.saved_progress, None
        remaining = len(self.train_loader)
        if progress is None:
            return 0, remaining
        mine = progress["rank"]
        if mine is not None:
            self.wait_timer.load_state_dict(mine["wait"])  # reading the batches again is waiting for data
        skipped = min(progress["steps"] * self.accum_steps, remaining)
        for _ in range(skipped):
            self.train_loader.to_device(self.next_batch(batches), self.ctx.device)
        if mine is not None:
            self.meter.load_state_dict(mine["meter"])
        self.restore_rng(progress["rng_states"])
        get_logger().info(f"epoch {self.epoch + 1}: continuing at step {progress['steps'] + 1} "
                          f"({skipped} batches read again)")
        return progress["steps"], remaining - skipped

    def next_batch(self, batches):
        self.wait_timer.begin_wait()
        batch = next(batches)
        self.wait_timer.end_wait()
        self.storage.add_bad_videos(batch.get("bad_videos", ()))
        return batch

    def train_micro_batch(self, batch, sync, scale):
        clips, labels = self.train_loader.to_device(batch, self.ctx.device)
        self.forward_backward(clips, labels, sync, scale)

    def forward_backward(self, clips, labels, sync=True, scale=1.0):
        """Forward, loss and backward of one micro-batch on the device (gradients are summed)."""
        if self.cfg.MODEL.CHANNELS_LAST:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        no_sync = getattr(self.model, "no_sync", None)  # DDP only
        with nullcontext() if sync or no_sync is None else no_sync():
            with self.autocast():
                logits = self.model(clips)
            loss = F.cross_entropy(logits.float(), labels,
                                   label_smoothing=self.cfg.SOLVER.LABEL_SMOOTHING)
            self.scaler.scale(loss * scale).backward()
        self.meter.update(loss, logits, labels)

    def optimizer_step(self):
        self.scaler.unscale_(self.optimizer)
        clip_gradients(self.bare_model.parameters(), self.cfg)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=not du.zero_grad_in_place(self.model))

    def current_lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def is_eval_epoch(self):
        done = self.epoch + 1
        return done % self.cfg.TRAIN.EVAL_PERIOD == 0 or done == self.max_epoch

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """Everything a resumed run needs: the trainer's parts and every hook's state.

        A collective: every process must call it (rank 0 writes the file).
        """
        state = {"model": model_state(self.bare_model), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "stopped": self.stop_requested,
                 "rng_states": du.all_gather_objects(capture_rng_state(self.ctx.device)),
                 "world_size": self.ctx.world_size}
        for hook in self.hooks:
            state.update(hook.state_dict())
        return state

    def load_state_dict(self, state):
        self.bare_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = self.epoch = state["epoch"]
        self.stop_requested = state["stopped"]
        for hook in self.hooks:
            hook.load_state_dict(state)
        self.restore_rng(state["rng_states"])

    def restore_rng(self, rng_states):
        """This rank's random streams as the checkpoint saved them; reseeded (and said so) when
        the checkpoint was written by another number of processes."""
        if len(rng_states) == self.ctx.world_size:
            restore_rng_state(rng_states[self.ctx.rank], self.ctx.device)
            return
        get_logger().warning(
            f"checkpoint was written by {len(rng_states)} processes, this run has "
            f"{self.ctx.world_size}: random streams are reseeded, so the continuation will "
            f"not be bit-identical to an uninterrupted run.")
        seed_everything(self.cfg.RNG_SEED + 1000 * self.start_epoch + self.ctx.rank)
