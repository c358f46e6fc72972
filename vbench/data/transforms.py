"""Clip transforms: uint8 `T x H x W x C` clips in, normalised float `C x T x H x W` clips out.

The recipe follows SlowFast: resize so the short side is S (bilinear, `align_corners=False`, no
antialiasing, sizes floored like SlowFast), crop, flip, then `(x / 255 - mean) / std`.

Two kernels compute the same numbers:
- `resized_crop` (the CPU transforms, one clip): computes only the pixels that survive the crop.
  For each output row and column it takes the two source taps and weights `F.interpolate` would
  use (`bilinear_taps`, in PyTorch's float32 arithmetic), then interpolates separably with gathers
  and `lerp`, frame by frame so the intermediates stay in cache. The crop holds ~45% of the
  resized pixels and the full-frame float resize is the slowest part of the old path: this is
  2-3x faster per clip and equal to resize-then-crop up to float rounding (~1e-6).
- `resize_crop_normalise` (the GPU transform, whole batches): resizes the whole T stack in one
  `interpolate` call in channels-last memory, then crops and flips views, and normalises with one
  fused multiply-add. On a GPU the full resize is cheap and one call per batch is what counts.
"""
import math

import torch
import torch.nn.functional as F

from vbench.errors import ConfigError


def clip_to_float(clip):
    """uint8 `T H W C` -> float `C T H W` in [0, 1] (or `B T H W C` -> `B C T H W`)."""
    if clip.dim() == 4:
        return clip.permute(3, 0, 1, 2).float().div_(255)
    if clip.dim() == 5:
        return clip.permute(0, 4, 1, 2, 3).float().div_(255)
    raise ValueError(f"expected a T x H x W x C or B x T x H x W x C clip, got shape {tuple(clip.shape)}")


def short_side_size(height, width, size):
    """(new_height, new_width) with the short side equal to `size` (SlowFast rounding)."""
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def uniform_crop_offset(height, width, crop, spatial_idx):
    """(top, left) of SlowFast's 3-crop testing: 0/1/2 = start/centre/end of the long side."""
    if spatial_idx not in (0, 1, 2):
        raise ValueError(f"spatial_idx must be 0, 1 or 2, got {spatial_idx}")
    top, left = int(math.ceil((height - crop) / 2)), int(math.ceil((width - crop) / 2))
    if spatial_idx != 1:
        if height > width:
            top = 0 if spatial_idx == 0 else height - crop
        else:
            left = 0 if spatial_idx == 0 else width - crop
    return top, left


def bilinear_taps(in_size, out_size, start, count):
    """Source taps of output pixels `start .. start + count - 1` of a bilinear resize from
    `in_size` to `out_size` (align_corners=False): (first index, second index, weight of the
    second), all of shape (count,). The source coordinate `in / out * (i + 0.5) - 0.5` is rounded
    once to float32, as PyTorch's CPU kernel does on one thread (a fused multiply-add; on several
    threads it rounds twice, which can move a weight by one float32 step), and clamped at 0; the
    second index stops at the last pixel."""
    scale = float(torch.tensor(in_size / out_size, dtype=torch.float32))  # float32(in / out)
    pixel = torch.arange(start, start + count, dtype=torch.float64)
    source = (scale * (pixel + 0.5) - 0.5).float().clamp_(min=0)  # exact in float64, one rounding
    first = source.long()
    return first, (first + 1).clamp_(max=in_size - 1), source - first


def resized_crop(clip, decision, scale, shift):
    """uint8 `T H W C` -> float `C T crop crop`: one clip resized, cropped, flipped and
    normalised, computing only the cropped pixels (see the module docstring).

    decision: `(scaled_h, scaled_w, top, left, crop, flip)`; scale, shift: per-channel
    normalisation `x * scale + shift` (x in 0..255).
    """
    scaled_h, scaled_w, top, left, crop, flip = decision
    frames, height, width, channels = clip.shape
    if (scaled_h, scaled_w) == (height, width):  # no resize: the crop is a view
        return resize_crop_normalise(clip[None], [decision], scale, shift)[0]
    row0, row1, row_weight = bilinear_taps(height, scaled_h, top, crop)
    col0, col1, col_weight = bilinear_taps(width, scaled_w, left, crop)
    if flip:
        col0, col1, col_weight = col0.flip(0), col1.flip(0), col_weight.flip(0)
    first_row, last_row = int(row0[0]), int(row1[-1])
    first_col, last_col = int(col0.min()), int(col1.max())
    rows, cols = last_row - first_row + 1, last_col - first_col + 1
    col_taps, row_taps = torch.cat([col0, col1]) - first_col, torch.cat([row0, row1]) - first_row
    col_weight, row_weight = col_weight.view(1, crop, 1), row_weight.view(1, crop, 1)
    out = torch.empty((channels, frames, crop, crop), dtype=torch.float32)
    # per-frame buffers, reused: C x columns x rows, so that a gather moves whole columns
    window = torch.empty((channels, cols, rows), dtype=torch.uint8)
    picked = torch.empty((channels, 2 * crop, rows), dtype=torch.uint8)
    picked_float = torch.empty((channels, 2 * crop, rows), dtype=torch.float32)
    blended = torch.empty((channels, crop, rows), dtype=torch.float32)
    transposed = torch.empty((channels, rows, crop), dtype=torch.float32)
    picked_rows = torch.empty((channels, 2 * crop, crop), dtype=torch.float32)
    for t in range(frames):
        window.copy_(clip[t, first_row:last_row + 1, first_col:last_col + 1].permute(2, 1, 0))
        torch.index_select(window, 1, col_taps, out=picked)
        picked_float.copy_(picked)
        torch.lerp(picked_float[:, :crop], picked_float[:, crop:], col_weight, out=blended)
        transposed.copy_(blended.transpose(1, 2))  # C x rows x output columns
        torch.index_select(transposed, 1, row_taps, out=picked_rows)
        torch.lerp(picked_rows[:, :crop], picked_rows[:, crop:], row_weight, out=out[:, t])
    for channel in range(channels):
        out[channel].mul_(float(scale[channel])).add_(float(shift[channel]))
    return out


def resize_crop_normalise(clips, decisions, scale, shift):
    """uint8 `B T H W C` -> float `B C T crop crop`.

    decisions: one `(scaled_h, scaled_w, top, left, crop, flip)` per sample. Samples sharing a
    scaled size are resized in ONE interpolate call (a whole evaluation batch is one group).
    """
    batch, frames, height, width, channels = clips.shape
    crop = decisions[0][4]
    out = torch.empty((batch, channels, frames, crop, crop), dtype=torch.float32, device=clips.device)
    scale, shift = scale.view(-1, 1, 1, 1), shift.view(-1, 1, 1, 1)
    groups = {}
    for index, decision in enumerate(decisions):
        groups.setdefault(decision[:2], []).append(index)
    for (scaled_h, scaled_w), members in groups.items():
        group = clips if len(members) == batch else clips[members]
        # (n*T, C, H, W) in channels-last memory: a view, and the fast CPU resize layout
        x = group.reshape(-1, height, width, channels).permute(0, 3, 1, 2)
        if (scaled_h, scaled_w) != (height, width):
            x = F.interpolate(x.float(), size=(scaled_h, scaled_w), mode="bilinear",
                              align_corners=False)
        x = x.view(len(members), frames, channels, scaled_h, scaled_w)
        for position, index in enumerate(members):
            _, _, top, left, _, flip = decisions[index]
            view = x[position, :, :, top:top + crop, left:left + crop].float()  # no-op if resized
            if flip:
                view = view.flip(-1)
            torch.addcmul(shift, view.permute(1, 0, 2, 3), scale, out=out[index])
    return out


def _normalisation(cfg, device=None):
    mean = torch.tensor(cfg.DATA.MEAN, dtype=torch.float32, device=device)
    std = torch.tensor(cfg.DATA.STD, dtype=torch.float32, device=device)
    return 1 / (255 * std), -mean / std


def _check_clip(clips, dims):
    if clips.dtype != torch.uint8 or clips.dim() != dims:
        layout = "T x H x W x C" if dims == 4 else "B x T x H x W x C"
        raise ValueError(f"expected a uint8 {layout} clip, got {clips.dtype} of shape {tuple(clips.shape)}")


class _Recipe:
    """Sizes from the config, and per-sample (scaled size, crop offset, flip) decisions."""

    def __init__(self, cfg, train):
        data = cfg.DATA
        self.train = train
        if train:
            self.crop, self.fixed_size = data.TRAIN_CROP_SIZE, list(data.TRAIN_RESIZE)
            self.scale_range = list(data.TRAIN_JITTER_SCALES or data.TRAIN_MIN_MAX_SCALE)
            self.flip = bool(data.RANDOM_FLIP)
            shortest, short_key = self.scale_range[0], "DATA.TRAIN_MIN_MAX_SCALE"
        else:
            self.crop, self.fixed_size = data.TEST_CROP_SIZE, list(data.TEST_RESIZE)
            self.short_side, self.flip = data.TEST_MIN_SHORT_SIDE_SCALE, False
            shortest, short_key = self.short_side, "DATA.TEST_MIN_SHORT_SIDE_SCALE"
        split = "TRAIN" if train else "TEST"
        if self.fixed_size and min(self.fixed_size) < self.crop:
            raise ConfigError(f"DATA.{split}_CROP_SIZE {self.crop} does not fit in DATA.{split}_RESIZE "
                              f"{self.fixed_size}; lower the crop or raise the resize.")
        if not self.fixed_size and shortest < self.crop:
            raise ConfigError(f"DATA.{split}_CROP_SIZE {self.crop} is larger than the short side "
                              f"{shortest} ({short_key}); lower the crop or raise the scale.")

    def scaled_size(self, height, width, generator=None):
        if self.fixed_size:
            return tuple(self.fixed_size)
        if self.train:
            low, high = self.scale_range
            size = int(torch.randint(low, high + 1, (1,), generator=generator))
        else:
            size = self.short_side
        return short_side_size(height, width, size)

    def draw(self, height, width, generator):
        """Training decisions, drawn in this order: scale, crop top, crop left, flip."""
        scaled_h, scaled_w = self.scaled_size(height, width, generator)
        top = int(torch.randint(0, scaled_h - self.crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, scaled_w - self.crop + 1, (1,), generator=generator))
        flip = self.flip and bool(torch.rand((1,), generator=generator) < 0.5)
        return scaled_h, scaled_w, top, left, self.crop, flip

    def place(self, height, width, spatial_idx):
        """Evaluation decisions for one crop position."""
        scaled_h, scaled_w = self.scaled_size(height, width)
        top, left = uniform_crop_offset(scaled_h, scaled_w, self.crop, int(spatial_idx))
        return scaled_h, scaled_w, top, left, self.crop, False


class TrainTransform:
    """Random short-side scale (or fixed resize), random crop, random flip, normalise.

    `(clip uint8 T H W C, generator) -> float C T H W`; every random draw comes from `generator`.
    """

    def __init__(self, cfg):
        self.recipe = _Recipe(cfg, train=True)
        self.scale, self.shift = _normalisation(cfg)

    def __call__(self, clip, generator):
        _check_clip(clip, 4)
        decision = self.recipe.draw(clip.shape[1], clip.shape[2], generator)
        return resized_crop(clip, decision, self.scale, self.shift)

    def draw_only(self, clip, generator):
        """Take from `generator` what `__call__` would, computing no pixel (a replay, dataset.py)."""
        self.recipe.draw(clip.shape[1], clip.shape[2], generator)


class EvalTransform:
    """Short-side resize (or fixed resize), crop at `spatial_idx` (0/1/2; 1 = centre), normalise.

    `(clip uint8 T H W C, spatial_idx) -> float C T H W`.
    """

    def __init__(self, cfg):
        self.recipe = _Recipe(cfg, train=False)
        self.scale, self.shift = _normalisation(cfg)

    def __call__(self, clip, spatial_idx=1):
        _check_clip(clip, 4)
        decision = self.recipe.place(clip.shape[1], clip.shape[2], spatial_idx)
        return resized_crop(clip, decision, self.scale, self.shift)


class GpuTransform:
    """The train or eval transform on whole batches, on the batch's device.

    `(clips uint8 B T H W C, spatial_idx int64 B, generator=None) -> float B C T H W`.
    Evaluation resizes the whole batch in one call and crops each sample at its `spatial_idx`,
    giving exactly `EvalTransform`'s numbers; pass `spatial_idx` on the CPU (reading a GPU tensor
    waits for the GPU). Training draws each sample's scale, crop and flip from `generator` (a CPU
    generator; None uses torch's global one) in `TrainTransform`'s order. A list of differently
    sized clips is accepted too.
    """

    def __init__(self, cfg, train):
        self.recipe = _Recipe(cfg, train=train)
        self.scale, self.shift = _normalisation(cfg)

    def __call__(self, clips, spatial_idx=None, generator=None):
        count = len(clips)
        indices = [1] * count if spatial_idx is None else torch.as_tensor(spatial_idx).tolist()
        if isinstance(clips, (list, tuple)):
            return torch.cat([self(clip[None], [index], generator)
                              for clip, index in zip(clips, indices)])
        _check_clip(clips, 5)
        height, width = clips.shape[2], clips.shape[3]
        if self.recipe.train:
            decisions = [self.recipe.draw(height, width, generator) for _ in range(count)]
        else:
            decisions = [self.recipe.place(height, width, index) for index in indices]
        if self.scale.device != clips.device:
            self.scale, self.shift = self.scale.to(clips.device), self.shift.to(clips.device)
        return resize_crop_normalise(clips, decisions, self.scale, self.shift)
