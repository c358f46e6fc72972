"""Regional compilation (MODEL.COMPILE): torch.compile each repeated block, not the whole model.

A model lists its repeated block classes in `repeated_blocks` (X3D: its bottleneck blocks, MViT:
its transformer blocks). Each instance is compiled in place with `Module.compile`; every instance
runs the same forward code, and dynamo treats parameters and buffers as graph inputs, so one
compiled graph serves all the blocks that share a structure and input shapes (X3D-M: 12 graphs
for 26 blocks, MViT-B: 8 for 16, per training/eval mode). The first step compiles those small
graphs instead of one graph of the whole network, whose compilation did not finish within 150 s
on an H100 (benchmarks/results/HISTORY.md, "Compile that pays for itself"). The model object,
its state-dict keys and its layout stay as they are, so DDP, channels_last_3d and the evaluation
model (the same object) work unchanged. A model without `repeated_blocks` is compiled whole.
"""
import torch

COMPILE_BACKEND = "inductor"  # tests switch to "aot_eager": the same graphs, no code generation
# Graphs per forward code object before dynamo falls back to eager (its default is 8): X3D-M
# needs 24 (12 structures x train/eval), more when evaluating at another crop.
RECOMPILE_LIMIT = 64


def repeated_blocks(model):
    """The modules of `model` that regional compilation compiles (empty: compile it whole)."""
    block_types = tuple(getattr(model, "repeated_blocks", ()))
    return [m for m in model.modules() if block_types and isinstance(m, block_types)]


def compile_blocks(model):
    """`model` with every repeated block compiled in place, or `torch.compile(model)`."""
    blocks = repeated_blocks(model)
    if not blocks:
        return torch.compile(model, backend=COMPILE_BACKEND)
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, limit, max(getattr(config, limit), RECOMPILE_LIMIT))
    for block in blocks:
        # Static shapes: the loader pads every batch to its full size, and each block keeps its
        # shapes from step to step, so nothing is gained from dynamic-shape kernels.
        block.compile(backend=COMPILE_BACKEND, dynamic=False)
    return model
