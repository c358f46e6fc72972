"""CPU clip transform cost: full-frame resize then crop (old) vs resize of the cropped pixels only (new).

One loader worker's view: one thread, glibc keeping freed memory (as the loader's workers do),
uint8 `16 x 256 x 340 x 3` clips (Kinetics-like; `--portrait` adds 340 x 256) and the X3D-M recipe
(random short side in [256, 320], random 224 crop, flip, normalise). Both kernels run on the same
clips and decisions, interleaved in a shuffled order, and each call is timed in CPU time of this
process (robust to other jobs on a shared machine). Prints ms per clip (median and quartiles), the
ratio, and the largest difference between the two outputs.

    python benchmarks/bench_transforms.py --clips 60
"""
import argparse
import os
import random
import time

import numpy as np
import torch

from vbench.bench.sysinfo import cpu_model
from vbench.config import load_config
from vbench.data.loader import keep_freed_memory
from vbench.data.transforms import TrainTransform, resize_crop_normalise, resized_crop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=60, help="timed calls per kernel and shape")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--portrait", action="store_true", help="also time 340 x 256 (portrait) clips")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (loader workers use 1)")
    return parser.parse_args(argv)


def old_kernel(clip, decision, scale, shift):
    return resize_crop_normalise(clip[None], [decision], scale, shift)[0]


def new_kernel(clip, decision, scale, shift):
    return resized_crop(clip, decision, scale, shift)


KERNELS = {"old: resize whole frames, then crop": old_kernel,
           "new: resize only the cropped pixels": new_kernel}


def time_shape(transform, height, width, args, rng):
    """CPU ms per call of each kernel, and the largest output difference, for one clip shape."""
    generator = torch.Generator().manual_seed(0)
    clips = [torch.randint(0, 256, (args.frames, height, width, 3), dtype=torch.uint8,
                           generator=generator) for _ in range(4)]  # rotate: no clip stays cached
    times = {name: [] for name in KERNELS}
    largest_difference = 0.0
    for call in range(args.clips + 2):
        clip = clips[call % len(clips)]
        decision = transform.recipe.draw(height, width, generator)
        outputs = {}
        for name in rng.sample(list(KERNELS), len(KERNELS)):
            start = time.process_time()
            outputs[name] = KERNELS[name](clip, decision, transform.scale, transform.shift)
            if call >= 2:  # the first calls warm the allocator up
                times[name].append(1000 * (time.process_time() - start))
        old, new = outputs.values()
        largest_difference = max(largest_difference, float((old - new).abs().max()))
    return times, largest_difference


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    cfg = load_config(os.path.join(REPO, "configs/Kinetics/X3D_M.yaml"), ["NUM_GPUS", "0"])
    transform = TrainTransform(cfg)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"X3D-M train transform: short side {list(cfg.DATA.TRAIN_JITTER_SCALES)}, crop "
          f"{cfg.DATA.TRAIN_CROP_SIZE}, flip; {args.clips} clips of {args.frames} frames per shape; "
          f"CPU ms per clip, median [25%, 75%]")
    shapes = [(256, 340)] + ([(340, 256)] if args.portrait else [])
    rng = random.Random(0)
    for height, width in shapes:
        times, difference = time_shape(transform, height, width, args, rng)
        medians = {}
        for name, values in times.items():
            low, medians[name], high = np.percentile(values, [25, 50, 75])
            print(f"  {height}x{width} {name:<38}: {medians[name]:6.2f} [{low:.2f}, {high:.2f}]")
        old, new = medians.values()
        print(f"  {height}x{width} {'speed-up (old / new)':<38}: {old / new:6.2f}x; largest |old - new| "
              f"on normalised values {difference:.1e}")


if __name__ == "__main__":
    main()
