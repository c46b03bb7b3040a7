"""ImageNet-100 from an ImageNet copy: ``<data_root>/imagenet100/{train,val}/<wnid>/``.

The 100 classes are CMC's list (:data:`CMC_CLASSES`), the subset behind solo-learn's
ImageNet-100 numbers. The tree is the one ``data=imagenet100`` reads (torchvision's
``ImageFolder`` on ``train/`` and ``val/``); each file is a symbolic link to the source image,
or a copy of it.

Source layouts accepted:

- class folders: ``SOURCE/train/<wnid>/*.JPEG`` and ``SOURCE/val/<wnid>/*.JPEG``;
- the official flat validation folder, ``SOURCE/val/ILSVRC2012_val_XXXXXXXX.JPEG`` (training
  images in class folders as above), with a ground-truth file (:func:`read_val_labels`).

The tree is written into ``<data_root>/.imagenet100.partial`` and renamed at the end, so an
interrupted prepare never leaves a tree that looks complete; the next prepare removes the
leftover.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from emim_bench import config

# CMC's ImageNet-100 classes, in the file's order: imagenet100.txt of the GitHub repository
# HobbitLong/CMC (Tian, Krishnan and Isola, "Contrastive Multiview Coding", BSD 2-Clause),
# added in commit bc687a26de7ae350d98f671d25d164b65336b8c2, unchanged at 7b227be0b10e.
CMC_CLASSES: tuple[str, ...] = tuple(
    """
    n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890
    n03062245 n01773797 n01735189 n07831146 n07753275 n03085013 n04485082 n02105505
    n01983481 n02788148 n03530642 n04435653 n02086910 n02859443 n13040303 n03594734
    n02085620 n02099849 n01558993 n04493381 n02109047 n04111531 n02877765 n04429376
    n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855
    n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251
    n02701002 n03379051 n02259212 n07715103 n03947888 n04026417 n02326432 n03637318
    n01980166 n02113799 n02086240 n03903868 n02483362 n04127249 n02089973 n03017168
    n02093428 n02804414 n02396427 n04418357 n02172182 n01729322 n02113978 n03787032
    n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029
    n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630
    n03584829 n02123045 n04229816 n02100583 n03642806 n04336792 n03259280 n02116738
    n02108089 n03424325 n01855672 n02090622
    """.split()
)

SPLITS = ("train", "val")
# The extensions torchvision's ImageFolder reads (any case); other files are left out.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
KAGGLE_LABELS = "LOC_val_solution.csv"
DEVKIT_LABELS = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
# Where a flat val folder's ground truth is looked for, relative to SOURCE and to each of its
# three parents (Kaggle's copy keeps LOC_val_solution.csv three levels above ILSVRC/Data/CLS-LOC).
_LABEL_NAMES = (KAGGLE_LABELS, DEVKIT_LABELS, f"ILSVRC2012_devkit_t12/data/{DEVKIT_LABELS}")
_WNID = re.compile(r"^n\d{8}$")
_NAMED_AT_MOST = 5  # wnids named in one error line


class PrepareError(ValueError):
    """A source, ground truth or destination that cannot give the tree; the message is one
    line naming the problem and the fix."""


@dataclass(frozen=True)
class Plan:
    """The tree to build from one source.

    Attributes:
        source: the ImageNet folder, absolute.
        files: ``files[split][wnid]``, the source images of each class (absolute, sorted);
            each goes to ``<split>/<wnid>/<its file name>``.
        val_labels: the ground-truth file of a flat val folder; None for class folders.
    """

    source: Path
    files: Mapping[str, Mapping[str, tuple[Path, ...]]]
    val_labels: Path | None

    def relative_paths(self) -> dict[str, Path]:
        """``{"<split>/<wnid>/<file name>": source image}`` for every file of the tree."""
        return {
            f"{split}/{wnid}/{image.name}": image
            for split, classes in self.files.items()
            for wnid, images in classes.items()
            for image in images
        }

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class of each split, ``{split: {wnid: count}}``."""
        return {
            split: {wnid: len(images) for wnid, images in classes.items()}
            for split, classes in self.files.items()
        }

    def summary(self) -> list[str]:
        """One line per split: images, classes, fewest and most images in a class."""
        lines = []
        for split, per_class in self.counts().items():
            n = list(per_class.values())
            lines.append(
                f"{split}: {sum(n):,} images in {len(n)} classes "
                f"(min {min(n):,}, max {max(n):,} per class)"
            )
        return lines


def default_data_root() -> Path:
    """The config's data root, absolute: ``data_root`` of ``method_configs/config.yaml``
    (``$EMIM_BENCH_DATA`` when set, else ``../shared/data`` from the current folder), as
    ``emim-bench pretrain`` resolves it without a ``data_root=`` override."""
    cfg = OmegaConf.load(config.CONFIG_DIR / f"{config.CONFIG_NAME}.yaml")
    return Path(cfg.data_root).expanduser().resolve()


def destination(data_root: str | Path | None = None) -> Path:
    """Where ``data=imagenet100`` looks: ``<data_root>/<data.path>``, with ``data.path`` from
    ``method_configs/data/imagenet100.yaml`` (``imagenet100``).

    Args:
        data_root: the data root; None for :func:`default_data_root`.
    """
    root = default_data_root() if data_root is None else Path(data_root).expanduser().resolve()
    data_cfg = OmegaConf.load(config.CONFIG_DIR / "data" / "imagenet100.yaml")
    return root / str(data_cfg.path)


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """``classes`` as a tuple, after checking it is a non-empty list of distinct WordNet ids.

    Raises:
        PrepareError: an empty list, an id that is not ``n`` and 8 digits, or a repeated id.
    """
    classes = tuple(classes)
    malformed = [c for c in classes if not isinstance(c, str) or not _WNID.match(c)]
    if not classes or malformed:
        raise PrepareError(f"class list must hold WordNet ids (n + 8 digits); got {malformed}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise PrepareError(f"class list names {', '.join(repeated)} more than once")
    return classes


def plan(
    source: str | Path,
    classes: Sequence[str] = CMC_CLASSES,
    val_labels: str | Path | None = None,
) -> Plan:
    """Find every image of ``classes`` in an ImageNet copy, checking nothing is missing.

    Args:
        source: folder holding ``train/`` and ``val/`` (for Kaggle's copy,
            ``ILSVRC/Data/CLS-LOC``).
        classes: WordNet ids to take; default CMC's ImageNet-100 list (:data:`CMC_CLASSES`).
        val_labels: ground truth of a flat val folder (:func:`read_val_labels`); None looks for
            one (:func:`find_val_labels`). Not read when val/ is in class folders.

    Returns:
        The :class:`Plan`; every class has at least one image in each split.

    Raises:
        PrepareError: no such source, no train/ or val/ in it, a class without images, a flat
            val folder without a ground truth or with images it does not list, a bad class list
            or ground-truth file.
    """
    classes = check_classes(classes)
    source = Path(source).expanduser()
    if not source.is_dir():
        raise PrepareError(
            f"source {source} does not exist or is not a folder; give the ImageNet folder "
            "that holds train/ and val/"
        )
    source = source.resolve()
    for split in SPLITS:
        if not (source / split).is_dir():
            raise PrepareError(
                f"{source} has no {split}/ folder; give the ImageNet folder that holds train/ "
                "and val/ (in Kaggle's copy, ILSVRC/Data/CLS-LOC)"
            )
    labels_path = None
    if _is_flat(source / "val"):
        labels_path = Path(val_labels).expanduser() if val_labels else find_val_labels(source)
        if labels_path is None:
            raise PrepareError(
                f"{source / 'val'} holds its images without class folders, and no ground truth "
                f"was found ({' or '.join(_LABEL_NAMES)} in {source} or its three parents); "
                "pass it with --val-labels PATH"
            )
        labels_path = labels_path.resolve()
    files = {"train": _class_folders(source / "train", classes)}
    if labels_path is None:
        files["val"] = _class_folders(source / "val", classes)
    else:
        files["val"] = _flat_folder(source / "val", classes, labels_path)
    return Plan(source, files, labels_path)


def find_val_labels(source: str | Path) -> Path | None:
    """The first ground-truth file found for a flat val folder, or None.

    Looks in ``source`` and then in its parent folders up to three levels up, for
    ``LOC_val_solution.csv`` (Kaggle), ``ILSVRC2012_validation_ground_truth.txt`` and
    ``ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt`` (the devkit).
    """
    source = Path(source).resolve()
    for folder in (source, *source.parents[:3]):
        for name in _LABEL_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def read_val_labels(path: str | Path) -> dict[str, str]:
    """The class of each image of ImageNet's flat validation folder.

    Two formats are read, told apart by their first line:

    - a CSV with the header ``ImageId,PredictionString``, as Kaggle's ``LOC_val_solution.csv``:
      the class is the first token of ``PredictionString`` (``n01751748 109 21 482 410``);
    - the devkit's ``ILSVRC2012_validation_ground_truth.txt``: line i holds the class number
      (``ILSVRC2012_ID``, 1 to 1000) of ``ILSVRC2012_val_{i:08d}``, translated into a wnid
      with the devkit's ``meta.mat``, which must lie in the same folder (as it does in
      ``ILSVRC2012_devkit_t12/data/``).

    Returns:
        ``{image name without extension: wnid}``, e.g. ``{"ILSVRC2012_val_00000001": "n01751748"}``.

    Raises:
        PrepareError: no such file, a format not listed above, or a malformed line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PrepareError(f"ground-truth file {path} does not exist; check --val-labels")
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline().strip()
    if first.startswith("ImageId"):
        return _read_kaggle_csv(path)
    if first.isdigit():
        return _read_devkit_ground_truth(path)
    raise PrepareError(
        f"{path} is neither a CSV with the header ImageId,PredictionString ({KAGGLE_LABELS}) "
        f"nor the devkit's {DEVKIT_LABELS} (one class number a line); its first line is "
        f"{first[:60]!r}"
    )


def build(plan: Plan, destination: str | Path, copy: bool = False, progress: bool = True) -> bool:
    """Write the tree of ``plan`` at ``destination``, unless it is already there.

    The files go into a sibling folder ``.<name>.partial``, renamed to ``destination`` once
    every file is in place; on any error, interruption included, that folder is removed.

    Args:
        plan: from :func:`plan`.
        destination: the folder to create, e.g. :func:`destination`.
        copy: copy the images instead of linking to them (symbolic links to absolute paths).
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        True when the tree was written; False when ``destination`` already held it (the same
        file names, every link leading to a file).

    Raises:
        PrepareError: ``destination`` holds something else, or links that lead nowhere.
        OSError: the files cannot be written (permissions, disk full).
    """
    destination = Path(destination)
    files = plan.relative_paths()
    if destination.is_dir() and not destination.is_symlink() and not any(destination.iterdir()):
        destination.rmdir()
    if destination.exists() or destination.is_symlink():
        _check_existing(destination, files)
        return False
    partial = destination.with_name(f".{destination.name}.partial")
    _remove(partial)  # left by a prepare that was killed
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        _fill(partial, files, copy, progress)
        partial.rename(destination)
    except BaseException:
        _remove(partial)
        raise
    return True


def _class_folders(folder: Path, classes: tuple[str, ...]) -> dict[str, tuple[Path, ...]]:
    files = {wnid: _images_in(folder / wnid) for wnid in classes}
    _check_complete(files, str(folder))
    return files


def _images_in(folder: Path) -> tuple[Path, ...]:
    if not folder.is_dir():
        return ()
    with os.scandir(folder) as entries:
        return tuple(sorted(folder / e.name for e in entries if _is_image(e)))


def _is_image(entry: os.DirEntry) -> bool:
    return entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file()


def _is_flat(folder: Path) -> bool:
    """True when ``folder`` holds images directly and no wnid folder."""
    with os.scandir(folder) as scan:
        entries = list(scan)
    if any(e.is_dir() and _WNID.match(e.name) for e in entries):
        return False
    return any(_is_image(e) for e in entries)


def _flat_folder(
    folder: Path, classes: tuple[str, ...], labels_path: Path
) -> dict[str, tuple[Path, ...]]:
    labels = read_val_labels(labels_path)
    files: dict[str, list[Path]] = {wnid: [] for wnid in classes}
    unlisted = []
    with os.scandir(folder) as scan:
        names = sorted(e.name for e in scan if _is_image(e))
    for name in names:
        wnid = labels.get(os.path.splitext(name)[0])
        if wnid is None:
            unlisted.append(name)
        elif wnid in files:
            files[wnid].append(folder / name)
    if unlisted:
        raise PrepareError(
            f"{len(unlisted)} images of {folder} are not in the ground truth {labels_path} "
            f"(e.g. {unlisted[0]}); pass this folder's ground truth with --val-labels"
        )
    complete = {wnid: tuple(images) for wnid, images in files.items()}
    _check_complete(complete, f"{folder} (classes from {labels_path.name})")
    return complete


def _check_complete(files: Mapping[str, Sequence[Path]], where: str) -> None:
    missing = [wnid for wnid, images in files.items() if not images]
    if not missing:
        return
    named = ", ".join(missing[:_NAMED_AT_MOST])
    if len(missing) > _NAMED_AT_MOST:
        named += f" and {len(missing) - _NAMED_AT_MOST} more"
    raise PrepareError(
        f"{len(missing)} of the {len(files)} classes have no images in {where}: {named}; "
        "the source must hold every class of the list (a full ImageNet copy does)"
    )


def _read_kaggle_csv(path: Path) -> dict[str, str]:
    labels = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
            raise PrepareError(f"{path}: the header must be ImageId,PredictionString")
        for row in reader:
            tokens = (row["PredictionString"] or "").split()
            if not row["ImageId"] or not tokens or not _WNID.match(tokens[0]):
                raise PrepareError(
                    f"{path}, line {reader.line_num}: expected an image id and a "
                    f"PredictionString starting with its wnid, got {row['ImageId']!r}, "
                    f"{row['PredictionString']!r}"
                )
            labels[os.path.splitext(row["ImageId"])[0]] = tokens[0]
    return labels


def _read_devkit_ground_truth(path: Path) -> dict[str, str]:
    wnid_of = _read_devkit_meta(path.with_name(DEVKIT_META), path)
    labels = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text.isdigit() or int(text) not in wnid_of:
                raise PrepareError(
                    f"{path}, line {number}: expected a class number of {DEVKIT_META}, got {text!r}"
                )
            labels[f"ILSVRC2012_val_{number:08d}"] = wnid_of[int(text)]
    return labels


def _read_devkit_meta(meta: Path, ground_truth: Path) -> dict[int, str]:
    """``{ILSVRC2012_ID: wnid}`` from the devkit's ``meta.mat`` (its ``synsets`` struct)."""
    if not meta.is_file():
        raise PrepareError(
            f"{ground_truth.name} gives class numbers, whose wnids are in the devkit's "
            f"{DEVKIT_META}; expected it beside it at {meta}"
        )
    from scipy.io import loadmat  # only the devkit format needs scipy

    try:
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
        ids, wnids = synsets["ILSVRC2012_ID"], synsets["WNID"]
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise PrepareError(
            f"{meta} is not the devkit's {DEVKIT_META} (no synsets with ILSVRC2012_ID and "
            f"WNID: {error})"
        ) from None
    return {int(i): str(w) for i, w in zip(ids, wnids)}


def _check_existing(destination: Path, files: Mapping[str, Path]) -> None:
    """Accept an existing ``destination`` only if it holds exactly ``files``, all readable."""
    if not destination.is_dir():
        raise PrepareError(
            f"{destination} exists and is not a folder; remove it, or choose another --data-root"
        )
    found = set()
    for folder, _, names in os.walk(destination):
        relative = Path(folder).relative_to(destination).as_posix()
        found.update(f"{relative}/{name}" for name in names)
    missing, extra = sorted(set(files) - found), sorted(found - set(files))
    if missing or extra:
        example = missing[0] if missing else extra[0]
        raise PrepareError(
            f"{destination} already holds a different tree ({len(missing)} of this source's "
            f"{len(files)} files missing, {len(extra)} others, e.g. {example}); remove it, or "
            "choose another --data-root"
        )
    broken = [name for name in files if not (destination / name).exists()]
    if broken:
        raise PrepareError(
            f"{destination} holds this tree but {len(broken)} of its links lead nowhere (e.g. "
            f"{broken[0]}); the source has moved: remove {destination} and prepare again"
        )


def _fill(folder: Path, files: Mapping[str, Path], copy: bool, progress: bool) -> None:
    for relative in {os.path.dirname(name) for name in files}:
        (folder / relative).mkdir(parents=True)
    with tqdm(
        total=len(files), unit="img", desc="copying" if copy else "linking", disable=not progress
    ) as bar:
        for relative, image in files.items():
            if copy:
                shutil.copyfile(image, folder / relative)
            else:
                os.symlink(image, folder / relative)
            bar.update()


def _remove(folder: Path) -> None:
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
