"""The run folder: the only module that writes its files, and the one that reads training's record.

    RUN/config.toml, checkpoint.pt    the settings as used; weights, optimiser, epoch, classes, pipeline
    RUN/metrics.csv, summary.json     one row per epoch; the final figures and the host
    RUN/tensorboard/                  the same rows as TensorBoard scalars, with --log-to tensorboard
    RUN/unseen.json, calibration.json the held-out classes; calibrated stacking's constant
    RUN/metrics.json, zeroshot-*/     `devise evaluate`'s and `devise zeroshot`'s results
    RUN/.devise                       devise's marker: the folder is a run's (`devise.files`)

Every file is written all or nothing (`devise.files`). One writer at a time (`held`): a second one
gets one line naming the holder. A run read back as a model: `devise.model.checkpoint`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import tomli_w
import torch

from devise import files
from devise.config import TrainConfig
from devise.data import ImageSet, load_dataset
from devise.data.splits import keep_classes, seen_classes
from devise.errors import DeviseError, RunFailed, read_text_file
from devise.model.checkpoint import CHECKPOINT, CONFIG, load_checkpoint
from devise.model.network import body_pipeline, stored_interpolation, stored_size

METRICS, SUMMARY, UNSEEN, EVALUATION = "metrics.csv", "summary.json", "unseen.json", "metrics.json"
ZERO_SHOT, CURVES, SKIPPED, HOLDER = "zeroshot.json", "curves.png", "skipped-images.txt", files.LOCK
SIMILARITY, EXAMPLES = "similarity.png", "examples.png"
RUN_KIND, ZERO_SHOT_KIND = "run", "zeroshot"  # what devise's marker says each folder is
ZERO_SHOT_FILES = {ZERO_SHOT, SIMILARITY, EXAMPLES}
CALIBRATION, TENSORBOARD = "calibration.json", "tensorboard"
DEVISE_FILES = {CONFIG, CHECKPOINT, METRICS, SUMMARY, UNSEEN, EVALUATION, CURVES, SKIPPED, HOLDER, CALIBRATION,
                TENSORBOARD, files.MARKER}
METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
                 "epoch_seconds", "images_per_second"]


# ---------------------------------------------------------------------------------------------
# One writer at a time


@contextlib.contextmanager
def held(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold `folder` for the life of the block: an exclusive lock on the folder itself (released
    by the system if the process dies), and while it is held a file naming the holder. A second
    writer gets one line naming the holder. A folder made here and left empty is removed again; a
    folder that cannot be written (read-only, full, a file) is one line, before any work."""
    folder = Path(folder)
    made = not folder.exists()
    files.make_folder(folder, what=f"the lock of devise {what}")
    try:
        import fcntl
    except ImportError:  # no flock on this system: one writer by convention only
        yield folder
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = folder / HOLDER
            who = holder.read_text(errors="replace").strip() if holder.is_file() else "another process"
            raise RunFailed(f"{folder} is in use by {who}; wait for it to finish or choose another folder") from None
        try:
            (folder / HOLDER).write_text(f"devise {what} (pid {os.getpid()} on {socket.gethostname()}, "
                                         f"since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        except OSError as error:
            with contextlib.suppress(OSError):
                (folder / HOLDER).unlink(missing_ok=True)
                if made:
                    folder.rmdir()
            raise files.not_written(folder / HOLDER, f"the lock of devise {what}", error) from None
        files.remove_leftovers(folder, DEVISE_FILES)
        try:
            yield folder
        finally:
            with contextlib.suppress(OSError):  # the folder may be gone: the error that says so is enough
                (folder / HOLDER).unlink(missing_ok=True)
                if made and not any(folder.iterdir()):
                    folder.rmdir()
    finally:
        os.close(handle)


def foreign_files(folder: Path) -> list[str]:
    """Names in a would-be run folder that devise did not write (a user's own files): in a folder
    that is not a run's (`is_run_folder`), every name but devise's lock and marker. The folder is
    listed once: under torchrun another process may be writing into it meanwhile."""
    if not folder.is_dir():
        return []
    names = os.listdir(folder)
    ours = is_run_folder(folder, names)
    return sorted(name for name in names
                  if not (name in (HOLDER, files.MARKER) or name.endswith(".tmp") or files.LEFTOVER.match(name)
                          or (ours and (name in DEVISE_FILES
                                        or (name.startswith("zeroshot-") and (folder / name).is_dir())))))


def is_run_folder(folder: Path, names: list[str] | None = None) -> bool:
    """A folder is a run's if devise's marker says so, or (a run written before the marker) if it
    holds a checkpoint devise wrote."""
    if files.marker_kind(folder) == RUN_KIND:
        return True
    if CHECKPOINT not in (os.listdir(folder) if names is None else names):
        return False
    try:
        load_checkpoint(folder)
    except DeviseError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Settings


def save_config(folder: Path, config: TrainConfig) -> None:
    """The run's settings, and with the first of them devise's marker: the folder is a run's."""
    if files.marker_kind(folder) != RUN_KIND:
        files.write_marker(folder, RUN_KIND)
    files.write_file(folder / CONFIG, tomli_w.dumps(config.to_dict()), what="the run's settings")


# ---------------------------------------------------------------------------------------------
# Checkpoint, metrics, summary


def save_epoch_record(folder: Path, rows: list[dict], state: dict) -> None:
    """An epoch's metrics row, then its checkpoint. Killed between the two, the metrics run one
    epoch ahead, which a resume leaves out (it keeps the rows up to the checkpoint's epoch); a
    checkpoint the system refuses (a full disk) puts the earlier metrics back: the run is as it was."""
    path = folder / METRICS
    earlier = path.read_bytes() if path.is_file() else None
    write_metrics(folder, rows)
    try:
        save_checkpoint(folder, state)
    except RunFailed:
        with contextlib.suppress(RunFailed):
            if earlier is None:
                path.unlink(missing_ok=True)
            else:
                files.write_file(path, earlier, what="the earlier metrics")
        raise


def save_checkpoint(folder: Path, state: dict) -> None:
    """All or nothing (`files.write_with`): a crash or a full disk never leaves half a checkpoint."""
    files.write_with(folder / CHECKPOINT, lambda handle: torch.save(state, handle),
                     what=f"the checkpoint of epoch {state.get('epoch', '?')}")


def read_metrics(folder: Path) -> list[dict]:
    """The per-epoch rows of `metrics.csv` (none when the run has not finished an epoch)."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    try:
        rows = list(csv.DictReader(read_text_file(path).splitlines()))
        parsed = [{k: float(row[k]) for k in METRIC_FIELDS} for row in rows]
    except (KeyError, ValueError, TypeError, csv.Error) as error:
        raise DeviseError(f"{path} is not a metrics file devise wrote ({error.__class__.__name__}: {error})") from None
    return parsed


def write_metrics(folder: Path, rows: list[dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (int(row[k]) if k == "epoch" else round(row[k], 6)) for k in METRIC_FIELDS})
    files.write_file(folder / METRICS, text.getvalue(), what=f"the metrics row of epoch {len(rows)}")


# TensorBoard's name for each column of metrics.csv: a train and a val curve share one chart.
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_top1": "top1/train", "val_top1": "top1/val",
           "train_top5": "top5/train", "val_top5": "top5/val", "lr": "lr", "images_per_second": "images_per_second",
           "epoch_seconds": "epoch_seconds"}


def summary_writer_class() -> type:
    """TensorBoard's `SummaryWriter`, or one line naming the extra that brings it: called before a
    run writes anything, so a missing package costs no training."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DeviseError('--log-to tensorboard needs the tensorboard package: pip install "devise[tensorboard]" '
                          "(or use --log-to csv)") from None
    return SummaryWriter


@contextlib.contextmanager
def epoch_scalars(folder: Path, log_to: str) -> Iterator[Callable[[dict], None]]:
    """A function that records one metrics row where `log_to` asks besides metrics.csv: nothing
    more for csv; TensorBoard scalars in RUN/tensorboard/ (a resumed run adds an event file
    there, which TensorBoard reads as the same run) for tensorboard."""
    if log_to != "tensorboard":
        yield lambda row: None
        return
    writer = summary_writer_class()(log_dir=str(folder / TENSORBOARD))

    def record(row: dict) -> None:
        for column, name in SCALARS.items():
            writer.add_scalar(name, row[column], int(row["epoch"]))
        writer.flush()  # each epoch shows while the run goes on

    try:
        yield record
    finally:
        writer.close()


def write_json(path: Path, content: dict) -> None:
    files.write_file(path, json.dumps(content, indent=2) + "\n", what=f"devise's {Path(path).name}")


# The keys each JSON file of a run folder must hold, to be taken as one devise wrote.
REQUIRED = {SUMMARY: ("epochs",), UNSEEN: ("ids", "names"), EVALUATION: ("hit@1", "chance"),
            ZERO_SHOT: ("target", "images", "target_classes", "label_space", "vocabulary", "models",
                        "control_similarity"), CALIBRATION: ("gamma", "method", "splits")}


def read_json(path: Path) -> dict | None:
    """A JSON file of a run folder (None when it is not there), checked for the keys devise writes."""
    if not path.is_file():
        return None
    try:
        content = json.loads(read_text_file(path))
    except ValueError as error:
        raise DeviseError(f"{path} is not valid JSON ({error})") from None
    missing = [key for key in REQUIRED.get(path.name, ()) if not isinstance(content, dict) or key not in content]
    if not isinstance(content, dict) or missing:
        raise DeviseError(f"{path} is not a file devise wrote (no {missing[0] if missing else 'object'!r} in it)")
    return content


def write_summary(folder: Path, summary: dict) -> None:
    write_json(Path(folder) / SUMMARY, summary)


def read_summary(folder: Path) -> dict | None:
    return read_json(Path(folder) / SUMMARY)


def write_evaluation(folder: Path, result: dict) -> None:
    write_json(Path(folder) / EVALUATION, result)


def read_evaluation(folder: Path) -> dict | None:
    return read_json(Path(folder) / EVALUATION)


def zero_shot_folder(run_folder: Path, target: str) -> Path:
    """Where `devise zeroshot` writes by default: inside the first run's folder."""
    return Path(run_folder) / f"zeroshot-{target}"


def write_zero_shot(folder: Path, results: dict) -> None:
    files.make_folder(folder, what="the zero-shot results")
    write_json(folder / ZERO_SHOT, results)


def is_zero_shot_folder(folder: Path) -> bool:
    """A zero-shot result devise wrote before its folders had a marker: its zeroshot.json reads."""
    try:
        return read_zero_shot(folder) is not None
    except DeviseError:
        return False


def read_zero_shot(folder: Path) -> dict | None:
    return read_json(Path(folder) / ZERO_SHOT)


def zero_shot_folders(run_folder: Path) -> list[Path]:
    """The zero-shot output folders inside a run folder."""
    return sorted(path.parent for path in Path(run_folder).glob(f"zeroshot-*/{ZERO_SHOT}"))


# ---------------------------------------------------------------------------------------------
# Held-out classes and the images a run sees


def write_skipped(folder: Path, names: list[str]) -> None:
    """List the images left out with --on-bad-image skip, one a line."""
    files.write_file(folder / SKIPPED, "".join(f"{name}\n" for name in names), what="the list of skipped images")


def write_unseen(folder: Path, ids: list[str], names: list[str]) -> None:
    """List the held-out classes in the run folder, so anyone can check none was trained on."""
    write_json(folder / UNSEEN, {"ids": ids, "names": names})


def write_calibration(folder: Path, calibration: dict) -> None:
    """Store the run's calibrated-stacking constant (`devise.training.calibration`) for `devise zeroshot`."""
    write_json(folder / CALIBRATION, calibration)


def read_calibration(folder: Path) -> dict | None:
    """The run's calibrated-stacking constant and how it was chosen, or None when it has none."""
    content = read_json(Path(folder) / CALIBRATION)
    if content is not None and not isinstance(content["gamma"], (int, float)):
        raise DeviseError(f"{Path(folder) / CALIBRATION} holds no numeric constant")
    return content


def read_unseen(folder: Path, config: TrainConfig) -> list[str]:
    """The ids of the classes the run held out of training (none without `--unseen`)."""
    if not config.unseen:
        return []
    path = Path(folder) / UNSEEN
    content = read_json(path)
    if content is None:
        raise DeviseError(f"{path} is missing: the run's held-out classes are unknown")
    ids = content["ids"]
    if not isinstance(ids, list) or len(ids) != config.unseen or not all(isinstance(i, str) for i in ids):
        raise DeviseError(f"{path} does not list the run's {config.unseen} held-out class ids")
    return ids


def seen_split(config: TrainConfig, split: str, unseen: list[str], *, data_root: str | None = None,
               progress: bool = True, image_size: int | None = None) -> ImageSet:
    """One split of a run's dataset as the run keeps it (`stored_size`; `image_size` for a smaller
    copy), the `unseen` classes removed."""
    pipeline = body_pipeline(config)
    data = load_dataset(config.data, data_root or config.data_root, split,
                        image_size=image_size or stored_size(pipeline, config.image_size, config.data), cache_dir=config.cache_dir,
                        download=config.download, progress=progress, on_bad_image=config.on_bad_image, val_share=config.val_share,
                        interpolation=stored_interpolation(pipeline))
    return keep_classes(data, seen_classes(data, unseen)) if unseen else data


def run_split(config: TrainConfig, folder: Path, split: str | None = None, *, data_root: str | None = None,
              progress: bool = True) -> ImageSet:
    """The images of a trained run's classes in one split (default: its validation split)."""
    return seen_split(config, split or config.val_split, read_unseen(folder, config), data_root=data_root, progress=progress)
