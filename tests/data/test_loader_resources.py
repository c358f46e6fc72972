"""The loader's share of the machine: workers, decoder threads and GPU transforms left to "auto"."""

import pytest

from vbench.config import load_config
from vbench.data.resources import decoder_threads, gpu_transforms, loader_decisions, loader_workers
from vbench.engine.resources import resolve_resources

from scaffold import REPO


def cfg_with(*opts):
    return load_config(None, list(opts))


@pytest.mark.parametrize("gpus, cores, workers, threads", [
    (1, 16, 15, 1),  # one GPU process on 16 cores: 15 workers, one decoder thread each
    (2, 16, 7, 1),  # two GPU processes share the cores
    (0, 2, 1, 2),  # CPU training: half the cores load, the rest compute
    (0, 16, 8, 2),
    (1, 1, 1, 1),  # never fewer than one
])
def test_auto_workers_and_decoder_threads_follow_the_cores(gpus, cores, workers, threads):
    cfg = cfg_with("NUM_GPUS", str(gpus), "DATA_LOADER.NUM_WORKERS", "auto")
    assert loader_workers(cfg, cores) == workers
    assert decoder_threads(cfg, cores) == threads
    assert loader_decisions(cfg, cores) == {"DATA_LOADER.NUM_WORKERS": workers, "DATA.DECODER_THREADS": threads}


def test_set_values_are_kept_and_threads_divide_the_cores_among_the_workers():
    cfg = cfg_with("NUM_GPUS", "1", "DATA_LOADER.NUM_WORKERS", "4", "DATA.DECODER_THREADS", "0")
    assert loader_workers(cfg, 16) == 4 and decoder_threads(cfg, 16) == 4
    cfg = cfg_with("NUM_GPUS", "1", "DATA_LOADER.NUM_WORKERS", "4", "DATA.DECODER_THREADS", "3",
                   "DATA.GPU_TRANSFORMS", "False")
    assert decoder_threads(cfg, 16) == 3 and gpu_transforms(cfg) is False
    assert loader_decisions(cfg, 16) == {}


def test_torchrun_local_world_divides_the_cores(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    cfg = cfg_with("NUM_GPUS", "1", "DATA_LOADER.NUM_WORKERS", "auto")
    assert loader_workers(cfg, 16) == 3


@pytest.mark.parametrize("gpus", [0, 1])
def test_gpu_transforms_auto_is_on_with_gpus_and_recorded_at_launch(gpus):
    cfg = cfg_with("NUM_GPUS", str(gpus), "DATA.GPU_TRANSFORMS", "auto")
    assert gpu_transforms(cfg) is bool(gpus)
    resolved_cfg, resolved = resolve_resources(cfg, capability_of=lambda device: (9, 0))  # no GPU here
    assert resolved["DATA.GPU_TRANSFORMS"] is bool(gpus) and resolved_cfg.DATA.GPU_TRANSFORMS is bool(gpus)
    assert resolved["DATA.DECODER_THREADS"] == resolved_cfg.DATA.DECODER_THREADS >= 1


def test_recipe_leaves_workers_and_gpu_transforms_to_the_machine():
    cfg = load_config(str(REPO / "configs/Kinetics/X3D_M.yaml"), ["NUM_GPUS", "0"])
    assert cfg.DATA_LOADER.NUM_WORKERS == "auto" and cfg.DATA.GPU_TRANSFORMS == "auto"
    assert cfg.DATA.DECODER_THREADS == 0 and cfg.DATA.DECODER_DEVICE == "auto"
    with pytest.raises(Exception, match="DATA.DECODER_THREADS"):
        load_config(None, ["DATA.DECODER_THREADS", "-1"])
