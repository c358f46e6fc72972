"""MODEL.COMPILE, regional compilation (vbench/models/compile.py): one graph per block structure
shared by the blocks, outputs and gradients equal to eager, and training with DDP (2 gloo
processes) and channels_last_3d whose evaluation model runs the same compiled blocks. Graphs are
captured by dynamo and run without code generation (backends "eager", and "aot_eager" where the
AOTAutograd backward matters), which keeps these tests to seconds; inductor's code is exercised
by benchmarks/bench_model.py --matrix --compile."""
import copy
import math

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from vbench.config import get_cfg, load_config
from vbench.engine.defaults import prepare_model
from vbench.engine.launch import launch_workers
from vbench.engine.train_loop import Trainer
from vbench.models import compile as regional
from vbench.models import get_builder

from numerics import assert_all_same_up_to_rounding, assert_same_up_to_rounding  # noqa: E402

TINY = {
    "x3d": ["X3D.DEPTH_FACTOR", 1.0, "X3D.WIDTH_FACTOR", 1.0, "X3D.DIM_C5", 32],
    "mvit": ["MVIT.DEPTH", 4, "MVIT.EMBED_DIM", 16, "MVIT.NUM_HEADS", 1, "MVIT.DIM_MUL", [[1, 2.0]],
             "MVIT.HEAD_MUL", [[1, 2.0]], "MVIT.POOL_Q_STRIDE", [[1, 1, 2, 2]],
             "MVIT.POOL_KV_STRIDE_ADAPTIVE", [1, 4, 4], "MVIT.DROPPATH_RATE", 0.3],
}
CLIP = (2, 3, 4, 32, 32)


def tiny(name, num_classes=5):
    cfg = get_cfg()
    cfg.merge_from_list(TINY[name] + ["DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32,
                                      "MODEL.NUM_CLASSES", num_classes, "MODEL.DROPOUT_RATE", 0.0])
    torch.manual_seed(0)
    return get_builder(name)(cfg)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name, backend, blocks, graphs, train_graphs", [
    ("x3d", "eager", 11, 9, 9),  # stages of 1, 2, 5, 3 blocks: first, then without / with SE
    # Blocks 2 and 3 differ only in their stochastic-depth rate; block 0 has none, so its graph
    # is the same in training.
    ("mvit", "aot_eager", 4, 3, 2),
])
def test_blocks_share_compiled_graphs_and_match_eager(monkeypatch, name, backend, blocks, graphs,
                                                      train_graphs):
    counter = CompileCounterWithBackend(backend)
    monkeypatch.setattr(regional, "COMPILE_BACKEND", counter)
    model = tiny(name).eval()
    twin = regional.compile_blocks(copy.deepcopy(model))
    assert twin is not model and len(regional.repeated_blocks(twin)) == blocks
    clip = torch.randn(CLIP, generator=torch.Generator().manual_seed(1))
    expected, actual = model(clip), twin(clip)
    torch.testing.assert_close(actual, expected)
    expected.square().sum().backward()
    actual.square().sum().backward()
    for (key, param), twin_param in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(twin_param.grad, param.grad, msg=key)
    assert counter.frame_count == graphs
    twin.train()(clip).sum().backward()  # training mode: new graphs, the same sharing
    assert counter.frame_count == graphs + train_graphs
    assert set(twin.state_dict()) == set(model.state_dict())  # checkpoints are unchanged


def test_a_model_without_repeated_blocks_is_compiled_whole(monkeypatch):
    monkeypatch.setattr(regional, "COMPILE_BACKEND", "aot_eager")
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 1), torch.nn.Flatten(1))
    compiled = regional.compile_blocks(model)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    torch.testing.assert_close(compiled(torch.ones(1, 3, 1, 2, 2)), model(torch.ones(1, 3, 1, 2, 2)))


GLOBAL_BATCH, STEPS, CLASSES = 4, 2, 3


class FixedBatches:
    """STEPS global batches of tiny clips; each rank gets its contiguous share."""

    def __init__(self, rank, world):
        g = torch.Generator().manual_seed(7)
        self.labels = torch.arange(GLOBAL_BATCH * STEPS) % CLASSES
        self.clips = torch.randn(GLOBAL_BATCH * STEPS, *CLIP[1:], generator=g)
        self.rank, self.share = rank, GLOBAL_BATCH // world
        self.num_videos, self.class_names = len(self.labels), [str(i) for i in range(CLASSES)]
        self.index_excluded = []  # (path, reason) of videos left out when indexing: none

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return STEPS

    def __iter__(self):
        for step in range(STEPS):
            s = slice(step * GLOBAL_BATCH + self.rank * self.share,
                      step * GLOBAL_BATCH + (self.rank + 1) * self.share)
            yield {"clips": self.clips[s], "labels": self.labels[s], "bad_videos": []}

    def to_device(self, batch, device):
        return batch["clips"].to(device), batch["labels"].to(device)


def _train_job(cfg, ctx, out_path, backend):
    regional.COMPILE_BACKEND = backend  # (spawned processes import the module afresh)
    data = FixedBatches(ctx.rank, ctx.world_size)
    torch.manual_seed(0)
    trainer = Trainer(cfg, ctx, prepare_model(get_builder("mvit")(cfg), cfg, ctx), data, data)
    trainer.train()
    blocks = regional.repeated_blocks(trainer.eval_model)
    with torch.no_grad():
        logits = trainer.eval_model.eval()(data.clips[:2].contiguous(memory_format=torch.channels_last_3d))
    if ctx.is_main:
        torch.save({"params": {k: v.detach().clone() for k, v in trainer.bare_model.state_dict().items()},
                    "logits": logits, "ddp": hasattr(trainer.model, "no_sync"),
                    "channels_last": trainer.bare_model.patch_embed.proj.weight.is_contiguous(
                        memory_format=torch.channels_last_3d),
                    "compiled_eval_blocks": sum(b._compiled_call_impl is not None for b in blocks),
                    "blocks": len(blocks)}, out_path)


def test_compiled_blocks_train_with_ddp_and_channels_last_like_eager(monkeypatch, tmp_path):
    monkeypatch.setattr(regional, "COMPILE_BACKEND", "eager")
    runs = {}
    for procs, compiled in ((1, False), (2, True)):
        # Without stochastic depth (and BN), 2 DDP processes compute what 1 process computes.
        cfg = load_config(None, TINY["mvit"][:-2] + [
            "MVIT.DROPPATH_RATE", 0.0, "DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32,
            "DATA.TEST_CROP_SIZE", 32, "MODEL.NUM_CLASSES", CLASSES, "MODEL.DROPOUT_RATE", 0.0,
            "MODEL.MODEL_NAME", "mvit", "NUM_GPUS", "0", "NUM_CPU_PROCS", str(procs),
            "TRAIN.BATCH_SIZE", str(GLOBAL_BATCH), "TEST.BATCH_SIZE", str(GLOBAL_BATCH),
            "SOLVER.MAX_EPOCH", "1", "SOLVER.LR_POLICY", "constant", "SOLVER.BASE_LR", "0.5",
            "MODEL.CHANNELS_LAST", "True", "MODEL.COMPILE", str(compiled), "OUTPUT_DIR", str(tmp_path)])
        launch_workers(cfg, _train_job, str(tmp_path / f"{compiled}.pt"), "eager")
        runs[compiled] = torch.load(tmp_path / f"{compiled}.pt")
    eager, compiled = runs[False], runs[True]
    assert compiled["ddp"] and compiled["channels_last"]
    assert compiled["compiled_eval_blocks"] == compiled["blocks"] == 4
    assert eager["compiled_eval_blocks"] == 0
    positions = GLOBAL_BATCH * math.prod(CLIP[2:])  # n of tests/numerics.py
    assert_same_up_to_rounding(compiled["logits"], eager["logits"], positions)
    assert_all_same_up_to_rounding(compiled["params"], eager["params"], positions)
