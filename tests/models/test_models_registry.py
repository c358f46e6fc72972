"""Every registered model trains on a tiny clip; the registry and `vbench models` behave."""
import math

import pytest
import torch

from vbench.cli.models import main as models_main
from vbench.config import ConfigError, load_config
from vbench.models import build_model, get_builder, registered_models, summary

NUM_CLASSES = 3
TINY_CLIP = (2, 4, 32)  # batch, frames, crop side
# torchvision's S3D cannot take the tiny clip: it ends with a fixed 2 x 7 x 7 pool.
SMALLEST_CLIP = {"s3d": (1, 14, 224)}
# Presets that ignore DATA.NUM_FRAMES / TRAIN_CROP_SIZE train only at their own clip, which costs
# more CPU than all the others together: marked slow (python -m pytest -q -m slow tests).
SLOW = {
    "mvit_b_16x4": "fixed 16 x 224^2 clip (the generic 'mvit' runs the same code on a tiny clip)",
    "mvit_b_32x3": "fixed 32 x 224^2 clip (the generic 'mvit' runs the same code on a tiny clip)",
}


def tiny_cfg(name, frames, crop):
    return load_config(None, [
        "MODEL.MODEL_NAME", name, "MODEL.NUM_CLASSES", NUM_CLASSES, "DATA.NUM_FRAMES", frames,
        "DATA.TRAIN_CROP_SIZE", crop, "DATA.TEST_CROP_SIZE", crop,
    ])


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
                                  for name in registered_models()])
def test_every_model_trains_on_a_tiny_clip(name):
    if name in SLOW:
        batch, (frames, crop, _) = 1, get_builder(name).input_size
    else:
        batch, frames, crop = SMALLEST_CLIP.get(name, TINY_CLIP)
    torch.manual_seed(0)
    model = build_model(tiny_cfg(name, frames, crop)).train()
    logits = model(torch.randn(batch, 3, frames, crop, crop))
    assert logits.shape == (batch, NUM_CLASSES)
    torch.nn.functional.cross_entropy(logits, torch.arange(batch) % NUM_CLASSES).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # DDP needs every parameter in the graph (no find_unused_parameters).
    assert [n for n, p in trainable if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)


def test_torchvision_models_are_registered_with_their_input_sizes():
    names = set(registered_models())
    expected = {"r3d_18": (16, 112, 112), "mc3_18": (16, 112, 112), "r2plus1d_18": (16, 112, 112),
                "s3d": (16, 224, 224), "mvit_v1_b": (16, 224, 224), "mvit_v2_s": (16, 224, 224),
                "swin3d_t": (16, 224, 224), "swin3d_s": (16, 224, 224), "swin3d_b": (16, 224, 224)}
    assert set(expected) <= names
    for name, size in expected.items():
        assert get_builder(name).input_size == size
        assert get_builder(name).model_family == "torchvision"
    assert get_builder("R3D_18") is get_builder("r3d_18")  # case-insensitive


def test_unknown_model_name_lists_registered_models():
    with pytest.raises(ConfigError) as err:
        build_model(load_config(None, ["MODEL.MODEL_NAME", "resnet_9000"]))
    message = str(err.value)
    assert "resnet_9000" in message and "MODEL.MODEL_NAME" in message
    assert all(name in message for name in registered_models())


def test_vbench_models_prints_a_table_with_the_parameter_count(capsys):
    assert models_main(["--names", "r3d_18", "--no-progress", "--configs-dir", ""]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("r3d_18"))
    cells = row.split()
    assert cells[1] == "torchvision"
    assert cells[2] == "33.37"  # 33,371,472 parameters at 400 classes
    assert float(cells[3]) > 30  # ~40.7 GFLOPs at 16 x 112 x 112 (multiply-add = 1 flop)
    assert "16 x 112 x 112" in row
    assert "400" in out and "multiply-add" in out


def test_vbench_models_unknown_name_is_a_clean_error(capsys):
    assert models_main(["--names", "nope_net", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nope_net" in err and "r3d_18" in err


def test_model_table_with_a_config_uses_its_clip_and_classes():
    cfg = tiny_cfg("r2plus1d_18", 4, 32)
    (row,) = summary.model_table(cfg, progress=False)
    assert (row.name, row.input_size) == ("r2plus1d_18", (4, 32, 32))
    assert row.params == 31_505_325 - 513 * (400 - NUM_CLASSES)  # 512 features + bias per class
    # fvcore counts convolutions as multiply-adds: the stem alone is 45 x 3 x 1 x 7 x 7 per output
    # position of its first (spatial) convolution.
    stem_macs = 45 * 3 * 7 * 7 * 4 * 16 * 16
    assert row.gflops_per_view * 1e9 > stem_macs
    assert not math.isnan(row.gflops_per_view)


def test_model_table_markdown_lists_config_files(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "A.yaml").write_text("MODEL:\n  MODEL_NAME: mc3_18\n")
    (tmp_path / "configs" / "B.yaml").write_text("_BASE_: A.yaml\nSOLVER:\n  BASE_LR: 0.5\n")
    (tmp_path / "configs" / "C.yaml").write_text("MODEL:\n  MODEL_NAME: r3d_18\n")
    (tmp_path / "configs" / "recipe.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n")  # no model
    assert [name for _, name in summary.model_config_files(str(tmp_path / "configs"))] == [
        "mc3_18", "mc3_18", "r3d_18"]
    row = summary.ModelRow("mc3_18", "torchvision", 11_695_440, 43.3, (16, 112, 112))
    table = summary.format_table([row], markdown=True, configs_dir=str(tmp_path / "configs"))
    lines = table.splitlines()
    assert lines[0].startswith("| model | family | params (M)")
    assert lines[2] == ("| mc3_18 | torchvision | 11.70 | 43.30 | 16 x 112 x 112 | "
                        "configs/A.yaml, configs/B.yaml |")


def test_fused_attention_is_counted_as_two_matrix_products():
    fvcore_nn = pytest.importorskip("fvcore.nn")

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 4)
    flops = fvcore_nn.FlopCountAnalysis(Attention(), (q, k, v))
    flops.set_op_handle("aten::scaled_dot_product_attention", summary.attention_flops)
    flops.unsupported_ops_warnings(False)
    assert flops.total() == 2 * 5 * 7 * (8 + 4)  # heads x queries x keys x (qk dim + v dim)


def test_all_configs_table_uses_each_config_clip(tmp_path, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny.yaml").write_text(
        "MODEL:\n  MODEL_NAME: r3d_18\n  NUM_CLASSES: 7\nDATA:\n  NUM_FRAMES: 2\n"
        "  TRAIN_CROP_SIZE: 32\n")
    assert models_main(["--all-configs", "--configs-dir", str(configs), "--no-progress"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "tiny.yaml" in line)
    assert row.split()[:4] == ["configs/tiny.yaml", "r3d_18", "torchvision", "7"]
    assert row.split()[4] == f"{(33_371_472 - 512 * 393 - 393) / 1e6:.2f}"  # 7 classes
    assert "2 x 32 x 32" in row


def test_flags_after_config_overrides_are_understood(capsys):
    argv = ["MODEL.MODEL_NAME", "mc3_18", "DATA.NUM_FRAMES", "2", "DATA.TRAIN_CROP_SIZE", "32",
            "--no-progress", "--configs-dir", "", "--markdown"]
    assert models_main(argv) == 0
    out = capsys.readouterr().out
    assert "| mc3_18 | torchvision | 11.70 |" in out and "2 x 32 x 32" in out
