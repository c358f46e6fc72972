"""torchvision video models as vbench builds them, and loading weights from local files."""
import argparse
import logging

import numpy as np
import pytest
import torch
import torchvision.models.video as tv_video

from vbench.config import ConfigError, load_config
from vbench.engine.checkpoint import capture_rng_state
from vbench.errors import UnsafeFileError
from vbench.models import build_model, get_builder
from vbench.models.weights import WeightsError, load_weights


def cfg_for(name, *opts):
    return load_config(None, ["MODEL.MODEL_NAME", name, *opts])


def build_on_meta(name, *opts):
    # Parameter shapes without the cost of initialising tens of millions of weights.
    with torch.device("meta"):
        return get_builder(name)(cfg_for(name, *opts))


def shapes(model):
    return {key: tuple(t.shape) for key, t in model.state_dict().items()}


@pytest.mark.parametrize("name, params", [
    ("r3d_18", 33_371_472), ("mc3_18", 11_695_440), ("r2plus1d_18", 31_505_325),
])
def test_resnet_parameter_counts_match_torchvision(name, params):
    model = build_on_meta(name, "MODEL.NUM_CLASSES", 400)
    with torch.device("meta"):
        reference = getattr(tv_video, name)(weights=None)
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(p.numel() for p in reference.parameters()) == params
    assert shapes(model) == shapes(reference)


@pytest.mark.parametrize("name", ["s3d", "swin3d_t", "swin3d_s", "swin3d_b", "mvit_v1_b", "mvit_v2_s"])
def test_state_dict_matches_torchvision_at_the_native_clip(name):
    # Same keys and shapes as torchvision's own model, so torchvision's weight files load.
    model = build_on_meta(name, "MODEL.NUM_CLASSES", 400, "DATA.NUM_FRAMES", 16,
                          "DATA.TRAIN_CROP_SIZE", 224, "DATA.TEST_CROP_SIZE", 224)
    with torch.device("meta"):
        reference = getattr(tv_video, name)(weights=None)
    assert shapes(model) == shapes(reference)


def test_mvit_follows_the_configured_clip():
    model = build_on_meta("mvit_v1_b", "DATA.NUM_FRAMES", 8, "DATA.TRAIN_CROP_SIZE", 160,
                          "DATA.TEST_CROP_SIZE", 160)
    assert model.pos_encoding.temporal_size == 8 // 2  # patch stride 2 x 4 x 4
    assert model.pos_encoding.spatial_size == (160 // 4, 160 // 4)
    with pytest.raises(ConfigError, match="DATA.TEST_CROP_SIZE 160"):
        build_on_meta("mvit_v2_s", "DATA.TRAIN_CROP_SIZE", 160, "DATA.TEST_CROP_SIZE", 224)


def test_head_dropout_and_classes_come_from_the_config():
    s3d = build_on_meta("s3d", "MODEL.NUM_CLASSES", 7, "MODEL.DROPOUT_RATE", 0.3)
    assert s3d.classifier[0].p == pytest.approx(0.3) and s3d.classifier[1].out_channels == 7
    mvit = build_on_meta("mvit_v2_s", "MODEL.NUM_CLASSES", 7, "MODEL.DROPOUT_RATE", 0.1,
                         "DATA.TEST_CROP_SIZE", 224)
    assert mvit.head[0].p == pytest.approx(0.1) and mvit.head[1].out_features == 7
    assert build_on_meta("swin3d_t", "MODEL.NUM_CLASSES", 7).head.out_features == 7


# ------------------------------------------------------------------------------------- weights
@pytest.fixture(scope="module")
def mc3_5_classes():
    torch.manual_seed(0)
    return build_model(cfg_for("mc3_18", "MODEL.NUM_CLASSES", 5))


def fresh_mc3(num_classes=5):
    return build_model(cfg_for("mc3_18", "MODEL.NUM_CLASSES", num_classes))


def assert_same_tensors(a, b, skip=()):
    for key, value in a.items():
        if key not in skip:
            assert torch.equal(value, b[key]), key


def test_vbench_checkpoint_round_trip(tmp_path, mc3_5_classes):
    path = tmp_path / "checkpoint_epoch_00003.pyth"
    # What the trainer writes: the model beside optimizer and RNG states (as plain data).
    torch.save({"format": "vbench_checkpoint", "epoch": 3, "model": mc3_5_classes.state_dict(),
                "rng_states": [capture_rng_state(torch.device("cpu"))]}, path)
    model = fresh_mc3()
    loaded = load_weights(model, str(path), "auto", "mc3_18")
    assert loaded.dropped_keys == []
    assert_same_tensors(mc3_5_classes.state_dict(), model.state_dict())


def test_an_older_vbench_checkpoint_with_numpy_rng_states_is_refused_with_the_convert_command(
        tmp_path, mc3_5_classes):
    path = tmp_path / "checkpoint_epoch_00003.pyth"
    torch.save({"format": "vbench_checkpoint", "epoch": 3, "model": mc3_5_classes.state_dict(),
                "rng_states": [{"numpy": np.random.get_state(), "torch": torch.get_rng_state()}]}, path)
    with pytest.raises(UnsafeFileError, match=r"numpy\.ndarray.*did NOT load") as err:
        load_weights(fresh_mc3(), str(path), "auto", "mc3_18")
    assert f"vbench checkpoint convert --trust {path}" in str(err.value)


def test_build_model_loads_model_weights(tmp_path, mc3_5_classes):
    path = tmp_path / "w.pth"
    wrapped = {f"module.{k}": v for k, v in mc3_5_classes.state_dict().items()}  # saved from DDP
    torch.save(wrapped, path)
    model = build_model(cfg_for("mc3_18", "MODEL.NUM_CLASSES", 5, "MODEL.WEIGHTS", str(path)))
    assert_same_tensors(mc3_5_classes.state_dict(), model.state_dict())


def test_torchvision_weights_with_another_class_count_drop_the_head(tmp_path, caplog):
    reference = tv_video.mc3_18(weights=None)  # 400 classes, as torchvision's Kinetics file
    path = tmp_path / "mc3_18-a90a0ba3.pth"
    torch.save(reference.state_dict(), path)
    model = fresh_mc3()
    head_before = model.fc.weight.clone()
    with caplog.at_level(logging.WARNING, logger="vbench.models.weights"):
        loaded = load_weights(model, str(path), "auto", "mc3_18")
    assert loaded.fmt == "torchvision"
    assert loaded.dropped_keys == ["fc.weight", "fc.bias"]
    assert "fc.weight" in caplog.text and "400" in caplog.text
    assert torch.equal(model.fc.weight, head_before)
    assert_same_tensors(reference.state_dict(), model.state_dict(), skip=("fc.weight", "fc.bias"))


def test_missing_file_explains_how_to_supply_weights_offline(tmp_path):
    missing = tmp_path / "r3d_18-b3b3357e.pth"
    with pytest.raises(WeightsError) as err:
        load_weights(fresh_mc3(), str(missing), "auto", "mc3_18")
    message = str(err.value)
    assert str(missing) in message and "MODEL.WEIGHTS" in message
    assert "never downloads" in message and "internet" in message
    assert "https://download.pytorch.org/models/mc3_18" in message  # where torchvision keeps it
    assert isinstance(err.value, ConfigError)


@pytest.mark.parametrize("content", [b"definitely not a checkpoint" * 10, b""])
def test_garbage_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="broken.pth.*cannot be read"):
        load_weights(fresh_mc3(), str(path))


def test_pickled_python_objects_are_not_unpickled(tmp_path, mc3_5_classes):
    path = tmp_path / "odd.pth"
    torch.save({"model_state": mc3_5_classes.state_dict(), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(UnsafeFileError, match="odd.pth.*argparse.Namespace.*vbench checkpoint convert --trust"):
        load_weights(fresh_mc3(), str(path))


def test_other_architecture_lists_mismatched_keys(tmp_path):
    path = tmp_path / "r3d.pth"
    with torch.device("meta"):
        r3d = tv_video.r3d_18(weights=None, num_classes=5)
    torch.save({k: torch.zeros(v.shape) for k, v in r3d.state_dict().items()}, path)
    with pytest.raises(WeightsError) as err:
        load_weights(fresh_mc3(), str(path), "auto", "mc3_18")
    message = str(err.value)
    assert "with a different shape" in message and "layer2.0.conv1.0.weight" in message
    assert "model 'mc3_18'" in message


def test_wrong_family_or_format_is_reported(tmp_path, mc3_5_classes):
    path = tmp_path / "w.pth"
    torch.save(mc3_5_classes.state_dict(), path)
    with pytest.raises(WeightsError, match="no converter from it to its torchvision models"):
        load_weights(fresh_mc3(), str(path), "slowfast", "mc3_18")
    with pytest.raises(ConfigError, match="MODEL.WEIGHTS_FORMAT"):
        load_weights(fresh_mc3(), str(path), "caffe2", "mc3_18")


# ------------------------------------------------------------- foreign layouts via converters
@pytest.mark.extras
def test_pytorchvideo_x3d_checkpoint_is_detected_and_converted(tmp_path):
    x3d = pytest.importorskip("pytorchvideo.models.x3d")
    torch.manual_seed(0)
    reference = x3d.create_x3d(input_clip_length=4, input_crop_size=32, depth_factor=2.2,
                               model_num_class=6, head_activation=None).eval()
    path = tmp_path / "X3D_M.pyth"
    torch.save({"model_state": reference.state_dict(), "epoch": 300}, path)  # the hub's layout
    model = build_model(cfg_for("x3d", "MODEL.NUM_CLASSES", 6, "DATA.NUM_FRAMES", 4,
                                "DATA.TRAIN_CROP_SIZE", 32)).eval()
    assert load_weights(model, str(path), "auto", "x3d").fmt == "pytorchvideo"
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), reference(clip), rtol=1e-4, atol=1e-5)


def test_slowfast_mvit_checkpoint_is_detected_and_converted(tmp_path):
    opts = ("MODEL.NUM_CLASSES", 4, "DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32, "MVIT.DEPTH", 2)
    source = build_model(cfg_for("mvit", *opts))
    # SlowFast names: DataParallel prefix, "head.projection", inside {"model_state": ...}.
    slowfast = {"module." + k.replace("head.", "head.projection."): v
                for k, v in source.state_dict().items()}
    path = tmp_path / "MVIT_B_16x4.pyth"
    torch.save({"model_state": slowfast, "epoch": 200, "cfg": "MODEL: ..."}, path)
    model = build_model(cfg_for("mvit", *opts))
    assert load_weights(model, str(path), "auto", "mvit").fmt == "slowfast"
    assert_same_tensors(source.state_dict(), model.state_dict())
