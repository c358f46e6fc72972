"""The untimed warm-up before the benchmark clock starts (docs/PROTOCOL.md, "The benchmark clock")."""
import copy
import time

import torch

from vbench.engine import distributed as du
from vbench.engine.checkpoint import capture_rng_state, restore_rng_state
from vbench.engine.log import get_logger
from vbench.engine.train_loop import HookBase
from vbench.errors import ConfigError


class WarmupHook(HookBase):
    """An untimed warm-up before the clock starts (MLPerf Training allows model compilation and
    warm-up on synthetic data off the clock): BENCHMARK.WARMUP_STEPS training steps and one
    evaluation batch on random clips of the run's shapes, so that torch.compile, cuDNN and Triton
    autotuning happen during set-up. It touches no data. The model, BN statistics, optimizer, grad
    scaler and every RNG state are restored afterwards, so training continues exactly as without
    it. It stops the run when it takes longer than BENCHMARK.WARMUP_MAX_S; its seconds go into
    results.json (`benchmark.warmup_s`, part of the untimed `setup_s`)."""

    def __init__(self, steps, max_s):
        self.steps, self.max_s = steps, max_s

    def before_train(self):
        t = self.trainer
        if not self.steps or t.finished:
            return
        start = time.perf_counter()
        saved = {"model": copy.deepcopy(t.bare_model.state_dict()),
                 "optimizer": copy.deepcopy(t.optimizer.state_dict()),
                 "scaler": t.scaler.state_dict(), "rng": capture_rng_state(t.ctx.device)}
        generator = torch.Generator().manual_seed(0)  # the random clips leave the global RNG alone
        for step in range(self.steps):
            clips, labels = random_batch(t.cfg, t.ctx, generator, training=True)
            t.forward_backward(clips.to(t.ctx.device), labels.to(t.ctx.device))
            t.optimizer_step()
            self.check_time(start, f"training step {step + 1}")
        clips, _ = random_batch(t.cfg, t.ctx, generator, training=False)
        with torch.no_grad(), t.autocast():
            t.eval_model.eval()(clips.to(t.ctx.device))
        t.eval_model.train()
        if t.ctx.device.type == "cuda":
            torch.cuda.synchronize(t.ctx.device)
        self.check_time(start, "the evaluation batch")
        t.bare_model.load_state_dict(saved["model"])
        t.optimizer.load_state_dict(saved["optimizer"])
        t.scaler.load_state_dict(saved["scaler"])
        t.optimizer.zero_grad(set_to_none=not du.zero_grad_in_place(t.model))
        restore_rng_state(saved["rng"], t.ctx.device)
        seconds = time.perf_counter() - start
        t.storage.put_run(warmup_s=seconds)
        get_logger().info(f"warm-up: {self.steps} training step(s) and one evaluation batch on random "
                          f"clips in {seconds:.1f} s (untimed)")

    def check_time(self, start, what):
        seconds = time.perf_counter() - start
        if seconds > self.max_s:
            raise ConfigError(
                f"the untimed warm-up took {seconds:.0f} s by the end of {what}, more than "
                f"BENCHMARK.WARMUP_MAX_S = {self.max_s:g} s (compilation or autotuning that does not "
                f"end). Turn off MODEL.COMPILE, lower BENCHMARK.WARMUP_STEPS, or raise "
                f"BENCHMARK.WARMUP_MAX_S if this machine needs longer.")


def random_batch(cfg, ctx, generator, training):
    """Random clips (normalised-range floats, C x T x H x W) and labels in the shape of one of this
    rank's training micro-batches or evaluation batches."""
    if training:
        batch = cfg.TRAIN.BATCH_SIZE // ctx.world_size // cfg.TRAIN.ACCUM_STEPS
        crop = cfg.DATA.TRAIN_CROP_SIZE
    else:
        batch, crop = cfg.TEST.BATCH_SIZE // ctx.world_size, cfg.DATA.TEST_CROP_SIZE
    shape = (batch, cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES, crop, crop)
    clips = torch.randn(shape, generator=generator)
    return clips, torch.randint(cfg.MODEL.NUM_CLASSES, (batch,), generator=generator)
