"""Clip transforms: shapes, values, randomness from the generator, crops, flips, GPU/CPU agreement."""
import random

import pytest
import torch
import torch.nn.functional as F

from vbench.config import ConfigError, get_cfg
from vbench.data.transforms import (
    EvalTransform,
    GpuTransform,
    TrainTransform,
    bilinear_taps,
    clip_to_float,
    resize_crop_normalise,
    resized_crop,
    short_side_size,
    uniform_crop_offset,
)

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.225, 0.25]
# Tolerance on normalised values between two bilinear kernels. PyTorch's own CPU resize rounds the
# source coordinate with a fused multiply-add on one thread and without on several, which moves a
# weight by one float32 step of the coordinate (~1.5e-5): up to ~7e-5 here on noise images, where
# neighbours differ by up to 255. A half-pixel shift or an off-by-one crop moves values by ~1.
TOL = 1e-4


def small_cfg(**data):
    cfg = get_cfg()
    cfg.DATA.MEAN, cfg.DATA.STD = MEAN, STD
    cfg.DATA.TRAIN_MIN_MAX_SCALE = [20, 28]
    cfg.DATA.TRAIN_CROP_SIZE = 16
    cfg.DATA.TEST_MIN_SHORT_SIDE_SCALE = 20
    cfg.DATA.TEST_CROP_SIZE = 16
    for key, value in data.items():
        setattr(cfg.DATA, key, value)
    return cfg


def random_clip(frames=4, height=24, width=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, height, width, 3), dtype=torch.uint8, generator=generator)


def normalise(x):
    mean = torch.tensor(MEAN).view(3, 1, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1, 1)
    return (x / 255 - mean) / std


def reference_eval(clip, short_side, crop, spatial_idx):
    """SlowFast: interpolate (bilinear, align_corners=False) on float, then uniform crop."""
    height, width = short_side_size(clip.shape[1], clip.shape[2], short_side)
    x = F.interpolate(clip.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear",
                      align_corners=False)
    top, left = uniform_crop_offset(height, width, crop, spatial_idx)
    return normalise(x[..., top:top + crop, left:left + crop].permute(1, 0, 2, 3))


@pytest.mark.parametrize("shape", [(4, 24, 32), (4, 40, 22)])
@pytest.mark.parametrize("spatial_idx", [0, 1, 2])
def test_eval_matches_slowfast_resize_then_crop(shape, spatial_idx):
    clip = random_clip(*shape)
    out = EvalTransform(small_cfg())(clip, spatial_idx)
    assert out.shape == (3, 4, 16, 16) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, reference_eval(clip, 20, 16, spatial_idx), atol=TOL, rtol=0)


def reference_train(clip, decision):
    """SlowFast order: interpolate the whole clip (float), crop, flip, normalise."""
    scaled_h, scaled_w, top, left, crop, flip = decision
    x = F.interpolate(clip.permute(0, 3, 1, 2).float(), size=(scaled_h, scaled_w), mode="bilinear",
                      align_corners=False)
    x = x[..., top:top + crop, left:left + crop]
    return normalise((x.flip(-1) if flip else x).permute(1, 0, 2, 3))


@pytest.mark.parametrize("shape", [(3, 24, 32), (3, 40, 22)])  # landscape and portrait
def test_train_matches_resize_whole_clip_then_crop(shape):
    # short sides 20..28 from 24 or 22: downscales, no resize and upscales; crops reach every border
    transform, clip = TrainTransform(small_cfg()), random_clip(*shape)
    generator, seen = torch.Generator().manual_seed(0), set()
    for _ in range(30):
        state = generator.get_state()
        decision = transform.recipe.draw(shape[1], shape[2], generator)
        seen.add((decision[0] > shape[1], decision[5]))
        generator.set_state(state)
        out = transform(clip, generator)
        assert out.shape == (3, 3, 16, 16) and out.is_contiguous()
        expected = reference_train(clip, decision)
        torch.testing.assert_close(out, expected, atol=TOL, rtol=0)
        # TOL sees the geometry errors a crop-only resize can make: an off-by-one crop, or the
        # pixel-corner convention (align_corners=True, a shift of (scale - 1) / 2 pixels)
        scaled_h, scaled_w, top, left, crop, flip = decision
        if left + 1 <= scaled_w - crop:
            shifted = reference_train(clip, (scaled_h, scaled_w, top, left + 1, crop, flip))
            assert (out - shifted).abs().max() > 0.1
        if (scaled_h, scaled_w) != shape[1:]:
            corners = F.interpolate(clip.permute(0, 3, 1, 2).float(), size=(scaled_h, scaled_w),
                                    mode="bilinear", align_corners=True)[..., top:top + crop, left:left + crop]
            corners = normalise((corners.flip(-1) if flip else corners).permute(1, 0, 2, 3))
            assert (out - corners).abs().max() > 10 * TOL
    assert len(seen) == 4  # up- and downscaled, flipped and not


def test_resized_crop_equals_resize_then_crop_for_any_geometry():
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    scale, shift = 1 / (255 * torch.tensor(STD)), -torch.tensor(MEAN) / torch.tensor(STD)
    for _ in range(40):
        height, width = rng.randint(4, 30), rng.randint(4, 30)
        crop = rng.randint(1, 12)
        scaled_h, scaled_w = rng.randint(crop, 40), rng.randint(crop, 40)  # 8x down to 10x up
        decision = (scaled_h, scaled_w, rng.randint(0, scaled_h - crop), rng.randint(0, scaled_w - crop),
                    crop, rng.random() < 0.5)
        clip = torch.randint(0, 256, (2, height, width, 3), dtype=torch.uint8, generator=generator)
        out = resized_crop(clip, decision, scale, shift)
        torch.testing.assert_close(out, reference_train(clip, decision), atol=TOL, rtol=0)
        batch = resize_crop_normalise(clip[None], [decision], scale, shift)[0]  # the GPU kernel
        torch.testing.assert_close(out, batch, atol=TOL, rtol=0)


def test_bilinear_taps_follow_interpolate_coordinates():
    # 4 -> 8 (x2): output pixel i samples (i + 0.5) / 2 - 0.5, clamped at 0, second tap clamped at 3
    first, second, weight = bilinear_taps(4, 8, 0, 8)
    assert first.tolist() == [0, 0, 0, 1, 1, 2, 2, 3] and second.tolist() == [1, 1, 1, 2, 2, 3, 3, 3]
    assert weight.tolist() == [0.0, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0.25]
    first, second, weight = bilinear_taps(8, 4, 1, 2)  # downscale, pixels 1 and 2 of 4: 2.5 and 4.5
    assert first.tolist() == [2, 4] and second.tolist() == [3, 5] and weight.tolist() == [0.5, 0.5]


def test_constant_clip_normalises_to_per_channel_value():
    clip = torch.empty(3, 30, 40, 3, dtype=torch.uint8)
    clip[..., 0], clip[..., 1], clip[..., 2] = 0, 128, 255
    expected = normalise(torch.tensor([0.0, 128.0, 255.0]).view(3, 1, 1, 1)).view(3)
    for out in (EvalTransform(small_cfg())(clip, 1),
                TrainTransform(small_cfg())(clip, torch.Generator().manual_seed(0))):
        for channel in range(3):
            values = out[channel]
            assert torch.allclose(values, expected[channel].expand_as(values), atol=1e-5)


def test_train_is_deterministic_given_generator_seed():
    transform, clip = TrainTransform(small_cfg()), random_clip()
    first = transform(clip, torch.Generator().manual_seed(3))
    again = transform(clip, torch.Generator().manual_seed(3))
    assert first.shape == (3, 4, 16, 16) and first.dtype == torch.float32
    assert torch.equal(first, again)
    others = [transform(clip, torch.Generator().manual_seed(seed)) for seed in range(4, 8)]
    assert any(not torch.equal(first, other) for other in others)


def test_train_scale_and_crop_stay_in_bounds():
    transform = TrainTransform(small_cfg())
    generator = torch.Generator().manual_seed(0)
    seen_scales = set()
    for height, width in ((24, 32), (40, 22)):
        for _ in range(200):
            scaled_h, scaled_w, top, left, crop, _ = transform.recipe.draw(height, width, generator)
            short = min(scaled_h, scaled_w)
            assert 20 <= short <= 28
            seen_scales.add(short)
            assert 0 <= top <= scaled_h - crop and 0 <= left <= scaled_w - crop
    assert seen_scales == set(range(20, 29))  # both ends of the range are reachable


def test_train_output_is_a_window_of_the_rescaled_clip():
    # scale fixed at the input short side: no resize, so the crop must be an exact window
    cfg = small_cfg(TRAIN_MIN_MAX_SCALE=[24, 24], RANDOM_FLIP=False)
    clip = random_clip()
    out = TrainTransform(cfg)(clip, torch.Generator().manual_seed(1))
    full = normalise(clip.permute(3, 0, 1, 2).float())
    windows = [(top, left) for top in range(9) for left in range(17)
               if torch.allclose(full[..., top:top + 16, left:left + 16], out, atol=1e-5)]
    assert len(windows) == 1


def test_flip_really_flips():
    cfg = small_cfg(TRAIN_MIN_MAX_SCALE=[16, 16])
    clip = random_clip(height=16, width=16)  # crop = frame: the only randomness left is the flip
    plain = normalise(clip.permute(3, 0, 1, 2).float())
    outs = [TrainTransform(cfg)(clip, torch.Generator().manual_seed(seed)) for seed in range(16)]
    flipped = [torch.allclose(out, plain.flip(-1), atol=1e-5) for out in outs]
    unflipped = [torch.allclose(out, plain, atol=1e-5) for out in outs]
    assert all(f != u for f, u in zip(flipped, unflipped))  # each output is one or the other
    assert any(flipped) and any(unflipped)
    cfg.DATA.RANDOM_FLIP = False
    assert all(torch.allclose(TrainTransform(cfg)(clip, torch.Generator().manual_seed(seed)), plain,
                              atol=1e-5)
               for seed in range(8))


@pytest.mark.parametrize("height,width,scaled", [(24, 32, (20, 26)), (32, 24, (26, 20)),
                                                 (240, 320, (256, 341)), (30, 30, (20, 20))])
def test_short_side_scale_for_landscape_and_portrait(height, width, scaled):
    assert short_side_size(height, width, scaled[0] if height <= width else scaled[1]) == scaled
    cfg = small_cfg(TEST_MIN_SHORT_SIDE_SCALE=min(scaled), TEST_CROP_SIZE=min(scaled))
    out = EvalTransform(cfg)(random_clip(2, height, width), 1)
    assert out.shape == (3, 2, min(scaled), min(scaled))


def test_three_crop_positions_along_the_long_side():
    cfg = small_cfg(TEST_MIN_SHORT_SIDE_SCALE=24, TEST_CROP_SIZE=24, MEAN=[0.0] * 3, STD=[1 / 255] * 3)
    columns = torch.arange(40, dtype=torch.uint8).view(1, 1, 40, 1).expand(2, 24, 40, 3)
    transform = EvalTransform(cfg)
    first_columns = [int(transform(columns, index)[0, 0, 0, 0]) for index in (0, 1, 2)]
    assert first_columns == [0, 8, 16]  # left, centre (ceil((40 - 24) / 2)), right
    rows = columns.transpose(1, 2)  # portrait: crops move top / centre / bottom
    first_rows = [int(transform(rows, index)[0, 0, 0, 0]) for index in (0, 1, 2)]
    assert first_rows == [0, 8, 16]
    with pytest.raises(ValueError, match="spatial_idx"):
        transform(columns, 3)


def test_fixed_resize_then_crop():
    cfg = small_cfg(TRAIN_RESIZE=[18, 24], TEST_RESIZE=[18, 24], RANDOM_FLIP=False)
    clip = random_clip()
    out = EvalTransform(cfg)(clip, 1)
    resized = F.interpolate(clip.permute(0, 3, 1, 2).float(), size=(18, 24), mode="bilinear",
                            align_corners=False)
    expected = normalise(resized[..., 1:17, 4:20].permute(1, 0, 2, 3))
    torch.testing.assert_close(out, expected, atol=TOL, rtol=0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        scaled_h, scaled_w, top, left, _, _ = TrainTransform(cfg).recipe.draw(24, 32, generator)
        assert (scaled_h, scaled_w) == (18, 24) and top <= 2 and left <= 8


def test_gpu_transform_eval_equals_cpu_eval_transform():
    clips = torch.stack([random_clip(seed=seed) for seed in range(4)])
    spatial_idx = torch.tensor([0, 1, 2, 1])
    out = GpuTransform(small_cfg(), train=False)(clips, spatial_idx)
    assert out.shape == (4, 3, 4, 16, 16) and out.dtype == torch.float32
    evaluate = EvalTransform(small_cfg())
    for sample in range(4):
        torch.testing.assert_close(out[sample], evaluate(clips[sample], int(spatial_idx[sample])),
                                   atol=TOL, rtol=0)


def test_gpu_transform_train_shapes_ranges_and_cpu_agreement():
    clips = torch.stack([random_clip(seed=seed) for seed in range(6)])
    gpu = GpuTransform(small_cfg(), train=True)
    out = gpu(clips, torch.zeros(6, dtype=torch.int64), torch.Generator().manual_seed(5))
    assert out.shape == (6, 3, 4, 16, 16) and out.dtype == torch.float32
    low, high = normalise(torch.zeros(3, 1, 1, 1)), normalise(torch.full((3, 1, 1, 1), 255.0))
    assert bool(((out >= low.unsqueeze(0) - 1e-5) & (out <= high.unsqueeze(0) + 1e-5)).all())
    # the same generator stream gives the same clip as the per-clip CPU transform
    cpu_generator = torch.Generator().manual_seed(5)
    for sample in range(6):
        expected = TrainTransform(small_cfg())(clips[sample], cpu_generator)
        torch.testing.assert_close(out[sample], expected, atol=TOL, rtol=0)


def test_gpu_transform_accepts_differently_sized_clips():
    clips = [random_clip(height=24, width=32), random_clip(height=40, width=22)]
    out = GpuTransform(small_cfg(), train=False)(clips, torch.tensor([2, 0]))
    assert out.shape == (2, 3, 4, 16, 16)
    torch.testing.assert_close(out[1], EvalTransform(small_cfg())(clips[1], 0), atol=TOL, rtol=0)


def test_clip_to_float_layout_and_range():
    clip = random_clip()
    out = clip_to_float(clip)
    assert out.shape == (3, 4, 24, 32) and out.dtype == torch.float32
    assert torch.equal(out[1, 2], clip[2, :, :, 1].float() / 255)
    assert clip_to_float(clip[None]).shape == (1, 3, 4, 24, 32)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform(small_cfg())(random_clip().float(), 1)
    with pytest.raises(ConfigError, match="DATA.TEST_CROP_SIZE"):
        EvalTransform(small_cfg(TEST_CROP_SIZE=32))
    with pytest.raises(ConfigError, match="DATA.TRAIN_RESIZE"):
        TrainTransform(small_cfg(TRAIN_RESIZE=[12, 40]))
