"""Dataset layouts: SlowFast CSV, class folders, Kinetics annotations; detection and errors."""
import json

import pytest

from vbench.config import load_config
from vbench.data import registry
from vbench.data.layouts import VideoEntry, detect_layout, read_split, write_class_names
from vbench.data.loader import build_loader
from vbench.data.registry import get_dataset
from vbench.errors import ConfigError, DatasetError

from videos import write_numbered_video


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def make_folder_dataset(root):
    for split, classes in {"train": ["b_class", "a class", "c"], "val": ["a class", "b_class"]}.items():
        for name in classes:
            for i in range(2):
                touch(root / split / name / f"v{i}.mp4")
    touch(root / "train" / "c" / "notes.txt")  # not a video: ignored
    return root


def test_folder_layout_labels_are_sorted_class_names_shared_by_splits(tmp_path):
    root = make_folder_dataset(tmp_path / "ds")
    assert detect_layout(root) == "folder"
    train, names = read_split(root, "train")
    val, val_names = read_split(root, "val")
    assert names == val_names == ["a class", "b_class", "c"]
    assert len(train) == 6 and len(val) == 4
    assert {(e.rel_path, e.label) for e in val} == {
        ("val/a class/v0.mp4", 0), ("val/a class/v1.mp4", 0), ("val/b_class/v0.mp4", 1), ("val/b_class/v1.mp4", 1)}
    assert all(e.path == str(root / e.rel_path) for e in train)


def test_slowfast_csv_with_prefix_separator_and_class_file(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "train.csv").write_text("videos/a.mp4,0\nvideos/b c.mp4,2\n\n")
    (root / "classes.txt").write_text("zero\none\ntwo\n")
    assert detect_layout(root) == "csv"
    entries, names = read_split(root, "train", path_prefix="/data/k", separator=",")
    assert names == ["zero", "one", "two"]
    assert [(e.path, e.label) for e in entries] == [("/data/k/videos/a.mp4", 0), ("/data/k/videos/b c.mp4", 2)]


def test_slowfast_csv_space_separator_and_default_class_names(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "val.csv").write_text("clips/x y.mp4 3\nclips/z.mp4 1\n")
    entries, names = read_split(root, "val")
    assert names == ["0", "1", "2", "3"]
    assert [(e.rel_path, e.label) for e in entries] == [("clips/x y.mp4", 3), ("clips/z.mp4", 1)]


def test_classnames_json_slowfast_format(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "train.csv").write_text("a.mp4 1\n")
    (root / "classnames.json").write_text(json.dumps({"jump": 1, "run": 0}))
    assert read_split(root, "train", layout="csv")[1] == ["run", "jump"]


def test_malformed_csv_line_names_file_and_line(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "train.csv").write_text("a.mp4 0\nb.mp4 1\nc.mp4\n")
    with pytest.raises(DatasetError) as info:
        read_split(root, "train")
    message = str(info.value)
    assert "train.csv, line 3" in message and "<integer label>" in message and "c.mp4" in message


def test_label_past_class_file_is_an_error(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "train.csv").write_text("a.mp4 5\n")
    (root / "classes.txt").write_text("only\n")
    with pytest.raises(DatasetError, match="label 5"):
        read_split(root, "train")


KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"


def make_kinetics(root, annotations_dir=True):
    folder = root / "annotations" if annotations_dir else root
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text(KINETICS_HEADER + "bending back,abc,14,24,train\n"
                                      "abseiling,xyz,0,10,train\n" "abseiling,gone,3,13,train\n")
    (folder / "val.csv").write_text(KINETICS_HEADER + '"bending back",vvv,1,11,val\n' "hurdling,hhh,5,15,val\n")
    touch(root / "train" / "bending_back" / "abc_000014_000024.mp4")  # underscore folder
    touch(root / "train" / "abseiling" / "xyz_000000_000010.mp4")
    touch(root / "val" / "bending back" / "vvv_000001_000011.mp4")  # space folder
    touch(root / "val" / "hhh_000005_000015.mp4")  # flat


@pytest.mark.parametrize("annotations_dir", [True, False])
def test_kinetics_annotations_with_spaces_underscores_flat_and_missing(tmp_path, caplog, annotations_dir):
    root = tmp_path / "k400"
    make_kinetics(root, annotations_dir)
    assert detect_layout(root) == "kinetics"
    train, names = read_split(root, "train")
    assert names == ["abseiling", "bending back", "hurdling"]  # union of train and val labels
    assert sorted((e.rel_path, e.label) for e in train) == [
        ("train/abseiling/xyz_000000_000010.mp4", 0), ("train/bending_back/abc_000014_000024.mp4", 1)]
    assert "1 of 3 annotated videos are missing" in caplog.text
    val, val_names = read_split(root, "val", layout="kinetics")
    assert val_names == names
    assert sorted((e.rel_path, e.label) for e in val) == [
        ("val/bending back/vvv_000001_000011.mp4", 1), ("val/hhh_000005_000015.mp4", 2)]


def test_kinetics_malformed_time_names_file_and_line(tmp_path):
    root = tmp_path / "k"
    make_kinetics(root)
    with open(root / "annotations" / "val.csv", "a") as f:
        f.write("hurdling,bad,five,15,val\n")
    with pytest.raises(DatasetError, match=r"val\.csv, line 4: column 'time_start'"):
        read_split(root, "val")


def test_missing_split_and_empty_folders_are_clear_errors(tmp_path):
    root = make_folder_dataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match="split 'test' not found"):
        read_split(root, "test", layout="folder")
    with pytest.raises(DatasetError, match="does not exist"):
        read_split(tmp_path / "nowhere", "train")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no video files"):
        read_split(empty, "train")
    with pytest.raises(DatasetError, match="cannot tell the layout"):
        detect_layout(tmp_path / "empty" / "train" / "a")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        read_split(root, "train", layout="lmdb")


def test_layout_override_beats_detection(tmp_path):
    root = make_folder_dataset(tmp_path / "ds")
    (root / "train.csv").write_text("train/c/v0.mp4 0\n")
    assert detect_layout(root) == "csv"
    assert len(read_split(root, "train")[0]) == 1
    assert len(read_split(root, "train", layout="folder")[0]) == 6


def test_write_class_names(tmp_path):
    path = write_class_names(["b", "a"], tmp_path / "run")
    assert json.loads(open(path).read()) == ["b", "a"]


# ------------------------------------------------------------------------------ dataset registry
def test_a_dataset_registered_in_one_place_is_what_the_loader_reads(tmp_path, monkeypatch):
    root = tmp_path / "clips"
    root.mkdir()
    for name in ("one", "two", "three"):
        write_numbered_video(root / f"{name}.mp4", num_frames=8, fps=8)

    def numbers(cfg, split):  # a user's dataset: every video of the folder, labelled by name length
        entries = [VideoEntry(str(root / f"{n}.mp4"), f"{n}.mp4", len(n) - 3) for n in ("one", "two", "three")]
        return entries, ["three letters", "four letters", "five letters"]

    monkeypatch.setitem(registry.DATASET_REGISTRY, "numbers", numbers)
    cfg = load_config(None, ["TRAIN.DATASET", "numbers", "DATA.PATH_TO_DATA_DIR", str(root),
                             "DATA.NUM_FRAMES", "2", "DATA.FRAME_RATE", "4", "DATA.TRAIN_CROP_SIZE", "32",
                             "DATA.TRAIN_MIN_MAX_SCALE", "[32, 32]", "TRAIN.BATCH_SIZE", "1",
                             "DATA_LOADER.NUM_WORKERS", "0", "DATA.INDEX_CACHE_DIR", str(tmp_path / "cache")])
    loader = build_loader(cfg, "train", training=True)
    assert loader.num_videos == 3 and loader.class_names == ["three letters", "four letters", "five letters"]
    assert sorted(info.label for info in loader.infos) == [0, 0, 2]
    with pytest.raises(ConfigError, match=r"TEST.DATASET 'nope'.*Registered datasets: .*folder.*numbers"):
        build_loader(load_config(None, ["TEST.DATASET", "nope", "DATA.PATH_TO_DATA_DIR", str(root)]), "val",
                     training=False)


def test_the_synthetic_dataset_says_how_to_generate_a_missing_split(tmp_path):
    cfg = load_config(None, ["DATA.PATH_TO_DATA_DIR", str(tmp_path / "none")])
    with pytest.raises(DatasetError, match=r"no split 'train'.*SYNTH.AUTO_GENERATE True.*vbench data synth --out"):
        get_dataset("synthetic")(cfg, "train")
    make_folder_dataset(tmp_path / "made")
    cfg = load_config(None, ["DATA.PATH_TO_DATA_DIR", str(tmp_path / "made")])
    entries, names = get_dataset("synthetic")(cfg, "val")
    assert len(entries) == 4 and names == ["a class", "b_class", "c"]
