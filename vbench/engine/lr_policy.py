"""Learning-rate policies: the learning rate as a pure function of the (fractional) epoch.

`LRSchedule(cfg, iters_per_epoch)` holds no optimizer and no step counter, so a resumed run gets
the same rates as an uninterrupted one. The trainer asks for the rate and writes it with
`vbench.engine.optimizer.set_lr`:

    schedule = LRSchedule(cfg, iters_per_epoch=len(train_loader))   # optimizer steps per epoch
    for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):           # 0-based epochs
        for it, batch in enumerate(train_loader):
            if schedule.step_unit == "iteration" or it == 0:
                set_lr(optimizer, schedule.lr_at(epoch + it / schedule.iters_per_epoch))
            ...

`step_unit` says how often the rate changes: "epoch" policies return the same rate for every
fractional epoch in [e, e + 1) (calling `lr_at` every iteration is therefore also correct),
"iteration" policies change the rate at every optimizer step.

Policies (base = `scaled_base_lr(cfg)`; WARMUP_START_LR and COSINE_END_LR are absolute rates and are
never scaled):

- "cosine_linear_warmup" (per epoch; the reference recipe). Exactly the rates of PyTorch's
  `SequentialLR([LinearLR(start_factor=WARMUP_FACTOR, total_iters=W),
  CosineAnnealingLR(T_max=C - W, eta_min=COSINE_END_LR)], milestones=[W])` stepped once at the
  end of every epoch, with W = WARMUP_EPOCHS (a whole number) and C = COSINE_MAX_EPOCH (MAX_EPOCH
  when 0). For the 0-based epoch e:
      e <  W:  base * (WARMUP_FACTOR + (1 - WARMUP_FACTOR) * e / W)
      e >= W:  COSINE_END_LR + (base - COSINE_END_LR) * (1 + cos(pi * (e - W) / (C - W))) / 2
  Like PyTorch's cosine, the rate rises again after epoch C; the recipe stops well before it.
- "cosine" (per iteration; SlowFast's `lr_func_cosine` with its warm-up). With the offset
  o = W if COSINE_AFTER_WARMUP else 0 and cos(e) = COSINE_END_LR + (base - COSINE_END_LR) *
  (1 + cos(pi * (e - o) / (MAX_EPOCH - o))) / 2:
      e <  W:  WARMUP_START_LR + (cos(W) - WARMUP_START_LR) * e / W
      e >= W:  cos(e)
- "multistep_warmup" (per iteration; torchvision's video reference: LinearLR warm-up over
  round(W * iters_per_epoch) iterations, then MultiStepLR, chained with SequentialLR):
      during warm-up:  base * (WARMUP_FACTOR + (1 - WARMUP_FACTOR) * i / warmup_iters)
      afterwards:      base * GAMMA ** (number of SOLVER.STEPS milestones m with e >= m)
  with i = e * iters_per_epoch.
- "constant" (per epoch): base.
"""
import math

from vbench.errors import ConfigError

EPOCH = "epoch"
ITERATION = "iteration"
STEP_UNITS = {
    "cosine_linear_warmup": EPOCH,
    "cosine": ITERATION,
    "multistep_warmup": ITERATION,
    "constant": EPOCH,
}
# Fractional epochs come from `epoch + it / iters_per_epoch`; this absorbs their rounding error.
_EPS = 1e-9


def scaled_base_lr(cfg):
    """SOLVER.BASE_LR, times TRAIN.BATCH_SIZE / SOLVER.REFERENCE_BATCH_SIZE with linear scaling."""
    if cfg.SOLVER.LR_SCALING == "linear":
        return cfg.SOLVER.BASE_LR * cfg.TRAIN.BATCH_SIZE / cfg.SOLVER.REFERENCE_BATCH_SIZE
    return cfg.SOLVER.BASE_LR


def _cosine(start_lr, end_lr, progress):
    """Half-cosine from start_lr (progress 0) to end_lr (progress 1)."""
    return end_lr + (start_lr - end_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


class LRSchedule:
    """`lr_at(epoch_float)` for SOLVER.LR_POLICY; see the module docstring for the formulas."""

    def __init__(self, cfg, iters_per_epoch):
        if int(iters_per_epoch) < 1:
            raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}.")
        solver = cfg.SOLVER
        if solver.LR_POLICY not in STEP_UNITS:
            raise ConfigError(f"SOLVER.LR_POLICY is {solver.LR_POLICY!r}; choose one of {list(STEP_UNITS)}.")
        self.policy = solver.LR_POLICY
        self.step_unit = STEP_UNITS[self.policy]
        self.iters_per_epoch = int(iters_per_epoch)
        self.base_lr = scaled_base_lr(cfg)
        self.warmup_epochs = float(solver.WARMUP_EPOCHS)
        self.warmup_factor = solver.WARMUP_FACTOR
        self.end_lr = solver.COSINE_END_LR
        setups = {"cosine_linear_warmup": self._setup_cosine_linear_warmup, "cosine": self._setup_cosine,
                  "multistep_warmup": self._setup_multistep_warmup, "constant": self._setup_constant}
        self._lr_fn = setups[self.policy](cfg)

    def lr_at(self, epoch):
        """Learning rate at fractional epoch `epoch` (0-based; epoch + it / iters_per_epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        if self.step_unit == EPOCH:
            epoch = math.floor(epoch + _EPS)
        return self._lr_fn(epoch)

    def __repr__(self):
        return (f"LRSchedule(policy={self.policy!r}, step_unit={self.step_unit!r}, "
                f"base_lr={self.base_lr}, iters_per_epoch={self.iters_per_epoch})")

    # ------------------------------------------------------------------ policies
    def _setup_cosine_linear_warmup(self, cfg):
        warmup = self.warmup_epochs
        if warmup != int(warmup):
            raise ConfigError(
                f"SOLVER.WARMUP_EPOCHS = {warmup} must be a whole number for LR_POLICY "
                f"'cosine_linear_warmup' (stepped once per epoch).")
        cosine_end = cfg.SOLVER.COSINE_MAX_EPOCH or cfg.SOLVER.MAX_EPOCH
        t_max = cosine_end - warmup
        if t_max <= 0:
            raise ConfigError(
                f"SOLVER.COSINE_MAX_EPOCH ({cosine_end}) must be larger than SOLVER.WARMUP_EPOCHS "
                f"({warmup}) for LR_POLICY 'cosine_linear_warmup'.")

        def lr(epoch):
            if epoch < warmup:
                return self.base_lr * (self.warmup_factor + (1.0 - self.warmup_factor) * epoch / warmup)
            return _cosine(self.base_lr, self.end_lr, (epoch - warmup) / t_max)
        return lr

    def _setup_cosine(self, cfg):
        warmup, max_epoch = self.warmup_epochs, cfg.SOLVER.MAX_EPOCH
        offset = warmup if cfg.SOLVER.COSINE_AFTER_WARMUP else 0.0
        if max_epoch - offset <= 0:
            raise ConfigError(
                f"SOLVER.MAX_EPOCH ({max_epoch}) must be larger than SOLVER.WARMUP_EPOCHS "
                f"({warmup}) when SOLVER.COSINE_AFTER_WARMUP is on.")
        if self.end_lr >= self.base_lr:
            raise ConfigError(
                f"SOLVER.COSINE_END_LR ({self.end_lr}) must be below the base learning rate "
                f"({self.base_lr}) for LR_POLICY 'cosine'.")
        start_lr = cfg.SOLVER.WARMUP_START_LR

        def cosine(epoch):
            return _cosine(self.base_lr, self.end_lr, (epoch - offset) / (max_epoch - offset))

        def lr(epoch):
            if epoch < warmup:
                return start_lr + (cosine(warmup) - start_lr) * epoch / warmup
            return cosine(epoch)
        return lr

    def _setup_multistep_warmup(self, cfg):
        warmup_iters = round(self.warmup_epochs * self.iters_per_epoch)
        milestones = sorted(cfg.SOLVER.STEPS)
        gamma = cfg.SOLVER.GAMMA

        def lr(epoch):
            iteration = epoch * self.iters_per_epoch
            if iteration + _EPS < warmup_iters:
                fraction = iteration / warmup_iters
                return self.base_lr * (self.warmup_factor + (1.0 - self.warmup_factor) * fraction)
            passed = sum(1 for milestone in milestones if epoch + _EPS >= milestone)
            return self.base_lr * gamma ** passed
        return lr

    def _setup_constant(self, cfg):
        return lambda epoch: self.base_lr
