"""``emim-bench prepare imagenet100``: fake ImageNet copies built from the real JPEGs of
imagenette-mini, in each accepted layout, turned into the tree ``data=imagenet100`` reads."""

from __future__ import annotations

import csv
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from emim_bench import config, data
from emim_bench.cli import main
from emim_bench.prepare import imagenet100 as prep


@pytest.fixture(scope="module")
def nette_classes(imagenette_mini) -> list[str]:
    """The 10 wnids of imagenette-mini, sorted."""
    return sorted(p.name for p in (imagenette_mini / "train").iterdir())


def _images(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def _flat_val_source(root: Path, imagenette: Path, classes: list[str]) -> tuple[Path, dict]:
    """A source with imagenette's train/ and a flat val/ of ``ILSVRC2012_val_{i:08d}.JPEG``
    links (i = 1..300, classes interleaved); returns it and ``{i: (wnid, original image)}``."""
    source = root / "ILSVRC" / "Data" / "CLS-LOC"  # Kaggle's layout
    (source / "val").mkdir(parents=True)
    (source / "train").symlink_to(imagenette / "train")
    originals = [(w, image) for w in classes for image in _images(imagenette / "val" / w)]
    random.Random(0).shuffle(originals)
    truth = {}
    for number, (wnid, image) in enumerate(originals, start=1):
        (source / "val" / f"ILSVRC2012_val_{number:08d}.JPEG").symlink_to(image)
        truth[number] = (wnid, image)
    return source, truth


def _write_kaggle_csv(path: Path, truth: dict) -> None:
    rows = [
        (f"ILSVRC2012_val_{n:08d}", f"{w} 10 20 110 200 {w} 5 5 50 60")
        for n, (w, _) in truth.items()
    ]
    random.Random(1).shuffle(rows)  # Kaggle's file is not in image order
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        writer.writerows(rows)


def _cmc_source(root: Path, imagenette: Path, per_class: int = 1) -> Path:
    """A source with every CMC class: train/ and val/ folders named by CMC's wnids, each holding
    links to ``per_class`` real imagenette images."""
    pool = sorted((imagenette / "train").glob("*/*.JPEG"))
    for index, wnid in enumerate(prep.CMC_CLASSES):
        for split in prep.SPLITS:
            (root / split / wnid).mkdir(parents=True)
            for k in range(per_class):
                image = pool[(index * per_class + k) % len(pool)]
                (root / split / wnid / f"{wnid}_{k}.JPEG").symlink_to(image)
    return root


def _tree(folder: Path) -> dict[str, Path]:
    """``{"<split>/<wnid>/<name>": path}`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if not p.is_dir()}


def test_the_class_list_is_cmc_imagenet100():
    classes = prep.CMC_CLASSES
    assert len(classes) == 100 and len(set(classes)) == 100
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in classes)
    assert classes[0] == "n02869837" and classes[-1] == "n02090622"
    assert prep.check_classes(classes) == classes


def test_a_bad_class_list_is_refused():
    with pytest.raises(prep.PrepareError, match="n \\+ 8 digits.*'n0144'"):
        prep.check_classes(["n01440764", "n0144"])
    with pytest.raises(prep.PrepareError, match="n01440764 more than once"):
        prep.check_classes(["n01440764", "n02102040", "n01440764"])
    with pytest.raises(prep.PrepareError):
        prep.check_classes([])


def test_class_folders_become_links_to_every_source_image(tmp_path, imagenette_mini, nette_classes):
    plan = prep.plan(imagenette_mini, classes=nette_classes)
    assert plan.counts() == {
        "train": dict.fromkeys(nette_classes, 100),
        "val": dict.fromkeys(nette_classes, 30),
    }
    assert plan.summary() == [
        "train: 1,000 images in 10 classes (min 100, max 100 per class)",
        "val: 300 images in 10 classes (min 30, max 30 per class)",
    ]
    assert plan.val_labels is None
    destination = prep.destination(tmp_path)
    assert prep.build(plan, destination, progress=False) is True

    tree = _tree(destination)
    assert len(tree) == 1300
    for split, count in (("train", 100), ("val", 30)):
        assert sorted(os.listdir(destination / split)) == nette_classes
        for wnid in nette_classes:
            sources = _images(imagenette_mini / split / wnid)
            placed = _images(destination / split / wnid)
            assert len(placed) == count == len(sources)
            assert [p.name for p in placed] == [s.name for s in sources]
            assert all(p.is_symlink() for p in placed)
            assert [os.readlink(p) for p in placed] == [str(s.resolve()) for s in sources]
    assert sorted(os.listdir(tmp_path)) == ["imagenet100"]  # no partial folder left


def test_copy_writes_identical_bytes(tmp_path, imagenette_mini, nette_classes):
    plan = prep.plan(imagenette_mini, classes=nette_classes[:2])
    destination = tmp_path / "imagenet100"
    assert prep.build(plan, destination, copy=True, progress=False)
    tree = _tree(destination)
    assert len(tree) == 2 * 130
    for relative, placed in tree.items():
        assert not placed.is_symlink()
        assert placed.read_bytes() == (imagenette_mini / relative).read_bytes()


def test_a_flat_val_folder_is_sorted_by_kaggles_csv(tmp_path, imagenette_mini, nette_classes):
    source, truth = _flat_val_source(tmp_path / "kaggle", imagenette_mini, nette_classes)
    _write_kaggle_csv(tmp_path / "kaggle" / prep.KAGGLE_LABELS, truth)  # 3 levels above source
    assert prep.find_val_labels(source) == tmp_path / "kaggle" / prep.KAGGLE_LABELS

    plan = prep.plan(source, classes=nette_classes[:9])  # the tenth class's images are left out
    assert plan.val_labels == tmp_path / "kaggle" / prep.KAGGLE_LABELS
    assert plan.counts()["val"] == dict.fromkeys(nette_classes[:9], 30)
    destination = tmp_path / "data" / "imagenet100"
    prep.build(plan, destination, progress=False)

    for number in (1, 2, 150, 300):
        wnid, original = truth[number]
        placed = destination / "val" / wnid / f"ILSVRC2012_val_{number:08d}.JPEG"
        if wnid == nette_classes[9]:
            assert not placed.exists()
            continue
        assert os.readlink(placed) == str(source / "val" / placed.name)
        assert placed.resolve() == original.resolve()
    for wnid in nette_classes[:9]:  # every image under its own class
        placed = _images(destination / "val" / wnid)
        assert len(placed) == 30
        assert {p.resolve().parent.name for p in placed} == {wnid}


def test_the_devkit_ground_truth_and_meta_mat_are_read(tmp_path, imagenette_mini, nette_classes):
    source, truth = _flat_val_source(tmp_path / "imagenet", imagenette_mini, nette_classes)
    devkit = tmp_path / "imagenet" / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    # The devkit numbers its 1000 leaf classes in its own order (not sorted by wnid); an
    # inner node (num_children > 0) has a number above 1000.
    number_of = {wnid: 10 - k for k, wnid in enumerate(nette_classes)}
    fields = [
        ("ILSVRC2012_ID", "O"),
        ("WNID", "O"),
        ("words", "O"),
        ("gloss", "O"),
        ("num_children", "O"),
    ]
    synsets = [(n, w, "words", "gloss", 0) for w, n in number_of.items()]
    synsets.append((1001, "n00001740", "entity", "gloss", 10))
    scipy.io.savemat(devkit / "meta.mat", {"synsets": np.array(synsets, dtype=fields)})
    lines = [str(number_of[truth[n][0]]) for n in sorted(truth)]
    (devkit / prep.DEVKIT_LABELS).write_text("\n".join(lines) + "\n")

    labels = prep.read_val_labels(devkit / prep.DEVKIT_LABELS)
    assert len(labels) == 300
    assert labels["ILSVRC2012_val_00000001"] == truth[1][0]
    assert labels["ILSVRC2012_val_00000300"] == truth[300][0]
    plan = prep.plan(source, classes=nette_classes)  # found 3 levels above source
    assert plan.val_labels == devkit / prep.DEVKIT_LABELS
    assert plan.counts()["val"] == dict.fromkeys(nette_classes, 30)
    assert source / "val" / "ILSVRC2012_val_00000007.JPEG" in plan.files["val"][truth[7][0]]

    (devkit / "meta.mat").unlink()
    with pytest.raises(prep.PrepareError, match="meta.mat; expected it beside it"):
        prep.read_val_labels(devkit / prep.DEVKIT_LABELS)


def test_ground_truth_that_does_not_fit_is_refused(tmp_path, imagenette_mini, nette_classes):
    source, truth = _flat_val_source(tmp_path / "kaggle", imagenette_mini, nette_classes)
    labels = tmp_path / "labels.csv"
    _write_kaggle_csv(labels, {n: truth[n] for n in truth if n != 17})
    with pytest.raises(
        prep.PrepareError,
        match="1 images of .* not in the ground truth .*ILSVRC2012_val_00000017.JPEG",
    ):
        prep.plan(source, classes=nette_classes, val_labels=labels)
    labels.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,tench 1 2 3 4\n")
    with pytest.raises(prep.PrepareError, match="line 2: .*'tench 1 2 3 4'"):
        prep.read_val_labels(labels)
    labels.write_text("\ufeffImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n")
    assert prep.read_val_labels(labels) == {"ILSVRC2012_val_00000001": "n01440764"}  # with a BOM
    labels.write_text("ILSVRC2012_val_00000001 n01440764\n")
    with pytest.raises(prep.PrepareError, match="neither a CSV .* nor the devkit"):
        prep.read_val_labels(labels)


def test_cli_prepares_the_cmc_classes_once_then_does_nothing(tmp_path, imagenette_mini, capsys):
    source = _cmc_source(tmp_path / "imagenet", imagenette_mini, per_class=2)
    root = tmp_path / "data"
    argv = ["prepare", "imagenet100", "--source", str(source), "--data-root", str(root)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train: 200 images in 100 classes (min 2, max 2 per class)" in out
    assert "val: 200 images in 100 classes (min 2, max 2 per class)" in out
    assert f"linked the images into {root / 'imagenet100'}" in out
    destination = root / "imagenet100"
    assert sorted(os.listdir(destination / "val")) == sorted(prep.CMC_CLASSES)
    placed = destination / "train" / "n02869837" / "n02869837_1.JPEG"
    assert os.readlink(placed) == str(source / "train" / "n02869837" / "n02869837_1.JPEG")

    assert main(argv) == 0  # a second run leaves the tree as it is
    assert f"{destination} already holds this tree: nothing to do" in capsys.readouterr().out
    assert len(_tree(destination)) == 400

    (source / "val" / "n02090622" / "n02090622_2.JPEG").symlink_to(placed.resolve())
    assert main(argv) == 2  # the source now gives one more file
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already holds a different tree" in error
    assert (
        "(1 of this source's 401 files missing, 0 others, e.g. val/n02090622/n02090622_2" in error
    )
    assert len(_tree(destination)) == 400


def test_cli_takes_a_flat_val_folder_with_val_labels(tmp_path, imagenette_mini, capsys):
    source = _cmc_source(tmp_path / "imagenet", imagenette_mini)
    truth = {}
    for number, wnid in enumerate(prep.CMC_CLASSES, start=1):
        (image,) = (source / "val" / wnid).iterdir()
        image.rename(source / "val" / f"ILSVRC2012_val_{number:08d}.JPEG")
        (source / "val" / wnid).rmdir()
        truth[number] = (wnid, image)
    labels = tmp_path / "elsewhere" / "solution.csv"
    labels.parent.mkdir()
    _write_kaggle_csv(labels, truth)
    root = tmp_path / "data"
    argv = ["prepare", "imagenet100", "--source", str(source), "--data-root", str(root)]
    assert main(argv) == 2 and "no ground truth was found" in capsys.readouterr().err
    assert main([*argv, "--val-labels", str(labels)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"source: {source} (flat val/, classes from {labels})"
    assert out[2] == "val: 100 images in 100 classes (min 1, max 1 per class)"
    assert out[-1] == f"train with: emim-bench pretrain data=imagenet100 data_root={root}"
    placed = root / "imagenet100" / "val" / "n02090622" / "ILSVRC2012_val_00000100.JPEG"
    assert os.readlink(placed) == str(source / "val" / placed.name)


def test_cli_names_the_missing_classes_in_one_line(tmp_path, imagenette_mini, capsys):
    source = _cmc_source(tmp_path / "imagenet", imagenette_mini)
    for wnid in ("n04592741", "n02090622"):
        for image in (source / "val" / wnid).iterdir():
            image.unlink()
    root = tmp_path / "data"
    assert main(["prepare", "imagenet100", "--source", str(source), "--data-root", str(root)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"emim-bench prepare: error: 2 of the 100 classes have no images in {source / 'val'}: "
        "n04592741, n02090622; the source must hold every class of the list (a full ImageNet "
        "copy does)\n"
    )
    assert not root.exists()


@pytest.mark.parametrize("case", ["no source", "no val folder", "flat val, no ground truth"])
def test_cli_fails_in_one_line_on_a_bad_source(tmp_path, imagenette_mini, capsys, case):
    source = tmp_path / "imagenet"
    if case == "no val folder":
        (source / "train").mkdir(parents=True)
    elif case == "flat val, no ground truth":
        source, _ = _flat_val_source(tmp_path / "imagenet", imagenette_mini, ["n01440764"])
    expected = {
        "no source": f"source {source} does not exist",
        "no val folder": f"{source} has no val/ folder",
        "flat val, no ground truth": "no ground truth was found",
    }[case]
    argv = ["prepare", "imagenet100", "--source", str(source), "--data-root", str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("emim-bench prepare: error: ") and error.count("\n") == 1
    assert expected in error and "Traceback" not in error
    if case == "flat val, no ground truth":
        assert "pass it with --val-labels PATH" in error


def test_an_unknown_dataset_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["prepare", "imagenet1k", "--source", "."])
    assert stop.value.code == 2
    assert "invalid choice: 'imagenet1k' (choose from 'imagenet100')" in capsys.readouterr().err


def test_a_failure_midway_leaves_no_tree(tmp_path, imagenette_mini, nette_classes, monkeypatch):
    plan = prep.plan(imagenette_mini, classes=nette_classes)
    destination = tmp_path / "imagenet100"
    real_symlink, calls = os.symlink, []

    def symlink_then_fail(source, target):
        calls.append(target)
        if len(calls) > 5:
            raise OSError(28, "No space left on device")
        real_symlink(source, target)

    monkeypatch.setattr(os, "symlink", symlink_then_fail)
    with pytest.raises(OSError, match="No space left"):
        prep.build(plan, destination, progress=False)
    assert len(calls) == 6 and Path(calls[0]).is_relative_to(tmp_path / ".imagenet100.partial")
    assert os.listdir(tmp_path) == []

    monkeypatch.setattr(os, "symlink", real_symlink)
    leftover = tmp_path / ".imagenet100.partial" / "train" / "n01440764"
    leftover.mkdir(parents=True)  # as a prepare killed with SIGKILL leaves it
    (leftover / "stale.JPEG").write_bytes(b"")
    assert prep.build(plan, destination, progress=False)
    assert os.listdir(tmp_path) == ["imagenet100"] and len(_tree(destination)) == 1300


def test_the_cli_reports_a_write_failure_in_one_line(
    tmp_path, imagenette_mini, monkeypatch, capsys
):
    source = _cmc_source(tmp_path / "imagenet", imagenette_mini)

    def refuse(source, target):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(os, "symlink", refuse)
    root = tmp_path / "data"
    assert main(["prepare", "imagenet100", "--source", str(source), "--data-root", str(root)]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    partial = root / ".imagenet100.partial" / "train" / prep.CMC_CLASSES[0] / "n02869837_0.JPEG"
    assert error == f"emim-bench prepare: error: [Errno 13] Permission denied: '{partial}'"
    assert os.listdir(root) == []


def test_the_default_destination_is_the_configs_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("EMIM_BENCH_DATA", str(tmp_path / "elsewhere"))
    assert prep.destination() == tmp_path / "elsewhere" / "imagenet100"
    monkeypatch.delenv("EMIM_BENCH_DATA")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert prep.destination() == tmp_path / "shared" / "data" / "imagenet100"
    assert prep.destination(tmp_path / "d") == tmp_path / "d" / "imagenet100"
    cfg = config.load(["data=imagenet100"])
    assert data.dataset_dir(cfg.data, data.data_root(cfg.data_root)) == prep.destination()


def test_a_missing_imagenet100_says_how_to_prepare_it(tmp_path):
    cfg = config.load(["data=imagenet100", f"data_root={tmp_path}"])
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.check_available(cfg.data, data.data_root(cfg.data_root))
    assert str(tmp_path / "imagenet100") in str(error.value)
    assert "`emim-bench prepare imagenet100 --source PATH`" in str(error.value)


def test_data_imagenet100_reads_the_prepared_tree(tmp_path, imagenette_mini, nette_classes):
    prep.build(
        prep.plan(imagenette_mini, classes=nette_classes), tmp_path / "imagenet100", progress=False
    )
    cfg = config.load(["data=imagenet100", f"data_root={tmp_path}", "data.train_size=20"])
    root = data.data_root(cfg.data_root)
    data.check_available(cfg.data, root)
    transform = data.eval_transform(cfg.data.kind, 32)
    train = data.open_split(cfg.data, root, "train", transform)
    test = data.open_split(cfg.data, root, "test", transform)
    assert (len(train), len(test)) == (1000, 300)
    assert train.classes == nette_classes == test.classes
    subset = data.training_subset(train, None, cfg.data.train_size, seed=0)
    labels = data.labels_of(subset)
    assert len(subset) == 20 and np.bincount(labels).tolist() == [2] * 10
    image, label = subset[0]
    assert image.shape == (3, 32, 32) and label == labels[0]
    first = _images(imagenette_mini / "val" / nette_classes[0])[0].name
    assert test.samples[0] == (str(tmp_path / "imagenet100" / "val" / nette_classes[0] / first), 0)
