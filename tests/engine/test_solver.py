"""Optimizer parameter groups, gradient clipping and LR policies (against torch's schedulers)."""
import math

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from vbench.config import ConfigError, get_cfg
from vbench.engine.lr_policy import LRSchedule, scaled_base_lr
from vbench.engine.optimizer import build_optimizer, clip_gradients, param_groups, set_lr


def make_cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


class TinyNet(nn.Module):
    """Conv + BN + LayerNorm + Linear, plus MViT-style position embedding and class token."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm3d(4)
        self.norm = nn.LayerNorm([2, 4])  # 2-D weight: a norm found by type, not by shape
        self.head = nn.Linear(4, 5)
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, 6, 4))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def groups_by_name(model, cfg):
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["group_name"]: (g["weight_decay"], sorted(names[id(p)] for p in g["params"]))
            for g in param_groups(model, cfg)}


def test_param_groups_bn_pos_cls_and_1d():
    model = TinyNet()
    cfg = make_cfg("SOLVER.WEIGHT_DECAY", 5e-4, "BN.WEIGHT_DECAY", 1e-6,
                   "SOLVER.ZERO_WD_1D_PARAM", True, "MVIT.ZERO_DECAY_POS_CLS", True)
    groups = groups_by_name(model, cfg)
    assert groups["bn"] == (1e-6, ["bn.bias", "bn.weight"])
    assert groups["no_decay"] == (0.0, ["cls_token", "conv.bias", "head.bias", "norm.bias",
                                        "norm.weight", "pos_embed_spatial"])
    assert groups["decay"] == (5e-4, ["conv.weight", "head.weight"])
    # frozen parameters are in no group
    assert all("frozen" not in n for _, names in groups.values() for n in names)


def test_param_groups_without_zero_rules_and_empty_group_dropped():
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.LayerNorm(4))
    cfg = make_cfg("SOLVER.ZERO_WD_1D_PARAM", False, "MVIT.ZERO_DECAY_POS_CLS", False)
    groups = groups_by_name(model, cfg)
    assert set(groups) == {"decay"}  # no BN module, no zero-decay rule: one group only
    assert groups["decay"][1] == ["0.bias", "0.weight", "1.bias", "1.weight"]
    cfg = make_cfg("MVIT.ZERO_DECAY_POS_CLS", True)
    assert set(groups_by_name(TinyNet(), cfg)["no_decay"][1]) == {"cls_token", "pos_embed_spatial"}


def test_build_sgd_and_adamw():
    model = TinyNet()
    cfg = make_cfg("SOLVER.BASE_LR", 0.01, "SOLVER.LR_SCALING", "linear", "TRAIN.BATCH_SIZE", 128,
                   "SOLVER.REFERENCE_BATCH_SIZE", 64, "SOLVER.MOMENTUM", 0.94, "SOLVER.NESTEROV", True)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["lr"] == pytest.approx(0.02) for g in opt.param_groups)
    assert opt.defaults["momentum"] == 0.94 and opt.defaults["nesterov"] is True
    cfg = make_cfg("SOLVER.OPTIMIZING_METHOD", "adamw", "SOLVER.BETAS", [0.8, 0.99], "SOLVER.BASE_LR", 1e-3)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.99)
    set_lr(opt, 0.123)
    assert [g["lr"] for g in opt.param_groups] == [0.123] * len(opt.param_groups)


def test_sgd_weight_decay_is_applied_per_group():
    # one SGD step with zero gradients: only weight decay moves the parameters
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    cfg = make_cfg("SOLVER.BASE_LR", 1.0, "SOLVER.WEIGHT_DECAY", 0.1, "BN.WEIGHT_DECAY", 0.0,
                   "SOLVER.MOMENTUM", 0.0, "SOLVER.NESTEROV", False)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
            p.grad = torch.zeros_like(p)
    build_optimizer(model, cfg).step()
    assert torch.allclose(model[0].weight, torch.full((2, 2), 0.9))
    assert torch.allclose(model[1].weight, torch.ones(2))


def test_solver_config_errors_name_the_keys():
    with pytest.raises(ConfigError, match="NESTEROV"):
        build_optimizer(TinyNet(), make_cfg("SOLVER.NESTEROV", True, "SOLVER.DAMPENING", 0.5))
    with pytest.raises(ConfigError, match="CLIP_GRAD_VAL"):
        build_optimizer(TinyNet(), make_cfg("SOLVER.CLIP_GRAD_VAL", 1.0, "SOLVER.CLIP_GRAD_L2NORM", 1.0))


def test_clip_gradients():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, -4.0, 0.5, 0.0])
    assert clip_gradients([p], make_cfg()) is None  # disabled by default
    assert torch.equal(p.grad, torch.tensor([3.0, -4.0, 0.5, 0.0]))
    clip_gradients([p], make_cfg("SOLVER.CLIP_GRAD_VAL", 1.0))
    assert torch.equal(p.grad, torch.tensor([1.0, -1.0, 0.5, 0.0]))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    norm = clip_gradients(iter([p]), make_cfg("SOLVER.CLIP_GRAD_L2NORM", 1.0))
    assert float(norm) == pytest.approx(5.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-4)


# ---------------------------------------------------------------------- LR policies
RECIPE = ("SOLVER.LR_POLICY", "cosine_linear_warmup", "SOLVER.BASE_LR", 0.01, "SOLVER.WARMUP_EPOCHS", 5.0,
          "SOLVER.WARMUP_FACTOR", 0.1, "SOLVER.COSINE_MAX_EPOCH", 30, "SOLVER.COSINE_END_LR", 1e-5,
          "SOLVER.MAX_EPOCH", 20)


def torch_rates(make_scheduler, steps, base_lr):
    """The LR a torch scheduler gives before each of `steps` steps."""
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    scheduler = make_scheduler(opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return rates


def test_cosine_linear_warmup_hand_values():
    schedule = LRSchedule(make_cfg(*RECIPE), iters_per_epoch=7)
    assert schedule.step_unit == "epoch"
    assert schedule.lr_at(0) == pytest.approx(0.001)
    assert schedule.lr_at(1) == pytest.approx(0.0028)
    assert schedule.lr_at(4) == pytest.approx(0.0082)
    assert schedule.lr_at(5) == pytest.approx(0.01)
    expected_19 = 1e-5 + (0.01 - 1e-5) * (1 + math.cos(math.pi * 14 / 25)) / 2
    assert schedule.lr_at(19) == pytest.approx(expected_19)
    assert schedule.lr_at(4.999) == schedule.lr_at(4)  # constant within an epoch
    assert schedule.lr_at(3 + 7 / 7) == schedule.lr_at(4)


def test_cosine_linear_warmup_matches_torch_sequential_lr():
    def make(opt):
        warm = lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
        cosine = lr_scheduler.CosineAnnealingLR(opt, T_max=25, eta_min=1e-5)
        return lr_scheduler.SequentialLR(opt, [warm, cosine], milestones=[5])

    expected = torch_rates(make, 32, 0.01)
    schedule = LRSchedule(make_cfg(*RECIPE), iters_per_epoch=3)
    for epoch, rate in enumerate(expected):
        assert schedule.lr_at(epoch) == pytest.approx(rate, rel=1e-9, abs=1e-12), epoch
        assert schedule.lr_at(epoch + 2 / 3) == pytest.approx(rate, rel=1e-9, abs=1e-12), epoch


def test_slowfast_cosine_hand_values_and_torch():
    cfg = make_cfg("SOLVER.LR_POLICY", "cosine", "SOLVER.BASE_LR", 0.1, "SOLVER.WARMUP_EPOCHS", 2.0,
                   "SOLVER.WARMUP_START_LR", 0.01, "SOLVER.MAX_EPOCH", 10, "SOLVER.COSINE_END_LR", 0.001)
    schedule = LRSchedule(cfg, iters_per_epoch=4)
    assert schedule.step_unit == "iteration"
    assert schedule.lr_at(0) == pytest.approx(0.01)
    assert schedule.lr_at(1.0) == pytest.approx(0.055)  # halfway between 0.01 and cos(2) = 0.1
    assert schedule.lr_at(6.0) == pytest.approx(0.001 + 0.099 * 0.5)
    # with COSINE_AFTER_WARMUP, SlowFast's rule is LinearLR + CosineAnnealingLR stepped per iteration
    expected = torch_rates(lambda opt: lr_scheduler.SequentialLR(opt, [
        lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=8),
        lr_scheduler.CosineAnnealingLR(opt, T_max=32, eta_min=0.001)], milestones=[8]), 40, 0.1)
    for i, rate in enumerate(expected):
        assert schedule.lr_at(i / 4) == pytest.approx(rate, rel=1e-9), i
    # without it, the cosine spans all epochs and warm-up ends on its value at WARMUP_EPOCHS
    cfg.SOLVER.COSINE_AFTER_WARMUP = False
    schedule = LRSchedule(cfg, iters_per_epoch=4)
    cos_at_2 = 0.001 + 0.099 * (1 + math.cos(math.pi * 2 / 10)) / 2
    assert schedule.lr_at(2.0) == pytest.approx(cos_at_2)
    assert schedule.lr_at(1.0) == pytest.approx(0.01 + (cos_at_2 - 0.01) / 2)
    assert schedule.lr_at(5.0) == pytest.approx(0.001 + 0.099 * 0.5)


def test_multistep_warmup_matches_torchvision_reference():
    ipe, warmup, steps, gamma, base = 5, 2, [4, 7], 0.1, 0.08
    cfg = make_cfg("SOLVER.LR_POLICY", "multistep_warmup", "SOLVER.BASE_LR", base, "SOLVER.WARMUP_EPOCHS",
                   float(warmup), "SOLVER.WARMUP_FACTOR", 0.001, "SOLVER.STEPS", steps, "SOLVER.GAMMA", gamma)
    schedule = LRSchedule(cfg, iters_per_epoch=ipe)

    def make(opt):  # as torchvision's references/video_classification/train.py builds it
        main = lr_scheduler.MultiStepLR(opt, milestones=[ipe * (m - warmup) for m in steps], gamma=gamma)
        warm = lr_scheduler.LinearLR(opt, start_factor=0.001, total_iters=ipe * warmup)
        return lr_scheduler.SequentialLR(opt, [warm, main], milestones=[ipe * warmup])

    expected = torch_rates(make, 10 * ipe, base)
    for i, rate in enumerate(expected):
        assert schedule.lr_at(i / ipe) == pytest.approx(rate, rel=1e-9), i
    assert schedule.lr_at(5.0) == pytest.approx(0.008)
    assert schedule.lr_at(9.5) == pytest.approx(0.0008)


def test_constant_and_scaling_and_errors():
    cfg = make_cfg("SOLVER.LR_POLICY", "constant", "SOLVER.BASE_LR", 0.2, "SOLVER.LR_SCALING", "linear",
                   "TRAIN.BATCH_SIZE", 32, "SOLVER.REFERENCE_BATCH_SIZE", 64)
    assert scaled_base_lr(cfg) == pytest.approx(0.1)
    assert LRSchedule(cfg, 3).lr_at(17.3) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="WARMUP_EPOCHS"):
        LRSchedule(make_cfg(*RECIPE, "SOLVER.WARMUP_EPOCHS", 2.5), 3)
    with pytest.raises(ConfigError, match="COSINE_MAX_EPOCH"):
        LRSchedule(make_cfg(*RECIPE, "SOLVER.COSINE_MAX_EPOCH", 5), 3)
