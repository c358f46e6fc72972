"""Config loading: defaults, YAML with _BASE_, overrides, aliases, freezing and every error path."""
import glob
import os

import pytest

from vbench.config import ConfigError, get_cfg, load_config, world_size_of
from vbench.config.args import parse_cfg_args
from vbench.engine.resources import require_resolved, resolve_resources

from scaffold import REPO


def write(path, text):
    path.write_text(text)
    return str(path)


def test_defaults_every_key_has_a_comment():
    source = open(os.path.join(REPO, "vbench", "config", "defaults.py")).read()
    for line in source.splitlines():
        if line.startswith("_C.") and "CfgNode()" not in line:
            assert "  # " in line, f"key without a one-line comment: {line}"


def test_yaml_base_and_overrides(tmp_path):
    base = write(tmp_path / "base.yaml", "SOLVER:\n  BASE_LR: 0.5\n  MAX_EPOCH: 7\nDATA:\n  NUM_FRAMES: 8\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.25\n")
    cfg = load_config(child, ["DATA.NUM_FRAMES", "4", "NUM_GPUS", "0"])
    assert cfg.SOLVER.BASE_LR == 0.25  # child wins over base
    assert cfg.SOLVER.MAX_EPOCH == 7  # inherited from base
    assert cfg.DATA.NUM_FRAMES == 4  # override wins over both
    assert cfg.NUM_GPUS == 0
    assert base


def test_config_is_frozen():
    cfg = load_config(None, [])
    with pytest.raises(AttributeError):
        cfg.SOLVER.BASE_LR = 1.0


def test_override_types_are_converted():
    cfg = load_config(None, ["DATA.TRAIN_MIN_MAX_SCALE", "[128, 160]", "DATA.TRAIN_CROP_SIZE", "112",
                             "SOLVER.NESTEROV", "False", "SOLVER.BASE_LR", "1", "OUTPUT_DIR", "/tmp/x"])
    assert cfg.DATA.TRAIN_MIN_MAX_SCALE == [128, 160]
    assert cfg.SOLVER.NESTEROV is False
    assert isinstance(cfg.SOLVER.BASE_LR, float) and cfg.SOLVER.BASE_LR == 1.0
    assert cfg.OUTPUT_DIR == "/tmp/x"


def test_unknown_key_on_command_line_names_key_source_and_closest():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["SOLVER.BASE_LRR", "0.1"])
    message = str(err.value)
    assert "SOLVER.BASE_LRR" in message and "command line" in message and "SOLVER.BASE_LR" in message


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "TRAIN:\n  BATCH_SIZEE: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "TRAIN.BATCH_SIZEE" in str(err.value) and "bad.yaml" in str(err.value)
    assert "TRAIN.BATCH_SIZE" in str(err.value)


def test_unknown_key_in_base_file_names_the_base(tmp_path):
    write(tmp_path / "base.yaml", "MODEL:\n  NUM_CLASES: 3\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError, match="base.yaml"):
        load_config(child)


def test_wrong_type_names_expected_type(tmp_path):
    with pytest.raises(ConfigError, match="expects an integer"):
        load_config(None, ["TRAIN.BATCH_SIZE", "lots"])
    path = write(tmp_path / "t.yaml", "SOLVER:\n  STEPS: 3\n")
    with pytest.raises(ConfigError, match="expects a list"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    path = write(tmp_path / "broken.yaml", "SOLVER: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    child = write(tmp_path / "child.yaml", "_BASE_: missing_base.yaml\n")
    with pytest.raises(ConfigError, match="missing_base.yaml"):
        load_config(child)


def test_odd_override_count():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(None, ["NUM_GPUS"])


def test_invalid_choice_and_impossible_settings():
    with pytest.raises(ConfigError, match="TRAIN.PRECISION"):
        load_config(None, ["TRAIN.PRECISION", "fp8"])
    with pytest.raises(ConfigError, match="divide evenly"):
        load_config(None, ["NUM_GPUS", "3", "TRAIN.BATCH_SIZE", "64"])
    with pytest.raises(ConfigError, match="TRAIN_CROP_SIZE"):
        load_config(None, ["DATA.TRAIN_CROP_SIZE", "400"])
    with pytest.raises(ConfigError, match="ACCUM_STEPS"):
        load_config(None, ["NUM_GPUS", "2", "TRAIN.BATCH_SIZE", "6", "TRAIN.ACCUM_STEPS", "2"])
    with pytest.raises(ConfigError, match="sync_batchnorm needs GPUs"):
        load_config(None, ["NUM_GPUS", "0", "NUM_CPU_PROCS", "2", "BN.NORM_TYPE", "sync_batchnorm"])
    load_config(None, ["NUM_GPUS", "0", "BN.NORM_TYPE", "sync_batchnorm"])  # one process: nothing to sync


def test_slowfast_alias_jitter_scales():
    cfg = load_config(None, ["DATA.TRAIN_JITTER_SCALES", "[240, 300]", "DATA.TRAIN_CROP_SIZE", "224"])
    assert cfg.DATA.TRAIN_MIN_MAX_SCALE == [240, 300]


def test_world_size():
    assert world_size_of(load_config(None, ["NUM_GPUS", "4", "NUM_SHARDS", "2"])) == 8
    assert world_size_of(load_config(None, ["NUM_GPUS", "0", "NUM_CPU_PROCS", "2"])) == 2


def test_positional_and_opts_overrides_parse_the_same():
    positional = parse_cfg_args(["--cfg", "a.yaml", "NUM_GPUS", "4", "DATA_LOADER.NUM_WORKERS", "32"], "t")
    after_opts = parse_cfg_args(["--cfg", "a.yaml", "--opts", "NUM_GPUS", "4", "DATA_LOADER.NUM_WORKERS", "32"], "t")
    assert positional.cfg_file == after_opts.cfg_file == "a.yaml"
    assert positional.opts == after_opts.opts == ["NUM_GPUS", "4", "DATA_LOADER.NUM_WORKERS", "32"]


def test_flags_after_the_overrides_are_still_flags():
    args = parse_cfg_args(["NUM_GPUS", "4", "--cfg", "a.yaml", "DATA.NUM_FRAMES", "8", "--cfg=b.yaml"], "t")
    assert args.cfg_file == "b.yaml" and args.opts == ["NUM_GPUS", "4", "DATA.NUM_FRAMES", "8"]


MODEL_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                       if os.sep + "benchmark" + os.sep not in p)  # benchmark/ holds reference tables


@pytest.mark.parametrize("path", MODEL_CONFIGS)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.MODEL.NUM_CLASSES > 0


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert b.SOLVER.BASE_LR != 123.0


def test_auto_keys_take_auto_or_their_type(tmp_path):
    assert load_config(None, ["MODEL.CHANNELS_LAST", "auto"]).MODEL.CHANNELS_LAST == "auto"
    assert load_config(None, ["MODEL.CHANNELS_LAST", "True"]).MODEL.CHANNELS_LAST is True
    yaml_file = write(tmp_path / "cl.yaml", "MODEL:\n  CHANNELS_LAST: auto\n")
    assert load_config(yaml_file).MODEL.CHANNELS_LAST == "auto"
    with pytest.raises(ConfigError, match=r"MODEL.CHANNELS_LAST.*a boolean or \"auto\""):
        load_config(None, ["MODEL.CHANNELS_LAST", "sometimes"])


CONCRETE_LOADER = ["DATA_LOADER.NUM_WORKERS", "2", "DATA.DECODER_THREADS", "1", "DATA.GPU_TRANSFORMS", "False"]


def test_resolve_resources_replaces_every_auto_and_reports_it():
    cfg = load_config(None, ["NUM_GPUS", "0", "TRAIN.PRECISION", "auto", "MODEL.CHANNELS_LAST", "auto",
                             *CONCRETE_LOADER])
    with pytest.raises(ConfigError, match="MODEL.CHANNELS_LAST"):
        require_resolved(cfg)
    resolved_cfg, resolved = resolve_resources(cfg)
    assert resolved == {"TRAIN.PRECISION": "fp32", "MODEL.CHANNELS_LAST": False,
                        "MODEL.DEPTHWISE_CONV": "default"}
    assert resolved_cfg.TRAIN.PRECISION == "fp32" and resolved_cfg.MODEL.CHANNELS_LAST is False
    assert resolved_cfg.is_frozen() and cfg.MODEL.CHANNELS_LAST == "auto"  # the input is untouched
    require_resolved(resolved_cfg)
    concrete = load_config(None, ["NUM_GPUS", "0", "MODEL.DEPTHWISE_CONV", "default", *CONCRETE_LOADER])
    assert resolve_resources(concrete) == (concrete, {})
