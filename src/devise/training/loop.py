"""One training loop for every head, readable top to bottom: data, model, optimiser, schedule,
the epoch loop with its checkpoint, and resume.

Where it runs is decided once, at the top of `train` (`devise.hardware`): the device, bf16 where
the device computes it natively, and under torchrun this process's place among the others. The
run folder's files are written through `devise.training.runs`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch

from devise.config import TrainConfig, own_body, problems, with_absolute_paths
from devise.data import ImageSet, load_dataset
from devise.data.cache import cache_folder
from devise.data.features import cached_features
from devise.data.pipeline import NO_AUGMENT, Augment, BatchLoader, FeatureBatches
from devise.data.preprocess import Preprocess
from devise.data.splits import choose_unseen
from devise.errors import DeviseError, RunFailed
from devise.hardware import (
    Distributed,
    describe_host,
    distributed,
    freed_memory_kept,
    use_bf16,
)
from devise.labels.run_labels import training_label_vectors
from devise.log import duration
from devise.model.checkpoint import (
    CHECKPOINT,
    Run,
    has_checkpoint,
    load_checkpoint,
    load_config,
    load_run,
    read_body_trained_on,
)
from devise.model.inference import dataset_features
from devise.model.network import (
    VisualNet,
    build_network,
    input_pipeline,
    with_image_size,
)
from devise.model.pretrained import trained_on
from devise.plots import plot_learning_curves
from devise.training import runs
from devise.training.calibration import (
    SPLITS,
    class_split_applies,
    class_split_constant,
)
from devise.training.objectives import SoftmaxTeacher, objective_for
from devise.training.steps import (
    cpu_copy,
    evaluate,
    evenly_spaced,
    first_images,
    make_optimizer,
    train_one_epoch,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Data


def held_out_classes(config: TrainConfig, progress: bool) -> tuple[list[str], list[str]]:
    """(ids, names) of the classes `--unseen K` holds out of training: a seeded draw, made once
    here and written to the run folder, from which everything later reads it."""
    if not config.unseen:
        return [], []
    data = load_dataset(config.data, config.data_root, config.val_split, cache_dir=config.cache_dir,
                        download=config.download, progress=progress, on_bad_image=config.on_bad_image,
                        val_share=config.val_share)
    ids = choose_unseen(data.class_ids, config.unseen, config.unseen_seed)
    return ids, [data.class_names[data.class_ids.index(i)] for i in ids]


def load_data(config: TrainConfig, unseen: list[str], progress: bool,
              dist: Distributed = Distributed()) -> tuple[ImageSet, ImageSet | None, ImageSet]:
    """The training set, its small copy for progressive resizing (or None) and the validation set,
    the `unseen` classes removed. With several processes, rank 0 loads first: it may have to
    decode the dataset into the cache, which the others then read."""
    if not dist.is_main:
        dist.barrier()
    train = training_set(config, unseen, None, progress)
    small = training_set(config, unseen, config.small_size, progress) if config.small_epochs else None
    val = runs.seen_split(config, config.val_split, unseen, progress=progress)
    if dist.is_main:
        dist.barrier()
    return train, small, val


def training_set(config: TrainConfig, unseen: list[str], image_size: int | None, progress: bool) -> ImageSet:
    """The training images as the run keeps them (`runs.stored_size`), or at progressive
    resizing's small `image_size`, which the dataset's cache keeps ready."""
    train = runs.seen_split(config, "train", unseen, progress=progress, image_size=image_size)
    return first_images(train, config.train_limit)


# ---------------------------------------------------------------------------------------------
# The model


def inherit_architecture(config: TrainConfig) -> TrainConfig:
    """With --init, the body's shape comes from the run it is warm-started from."""
    if not config.init:
        return config
    source = load_config(config.init)
    return replace(config, body=source.body, width=source.width, hidden=source.hidden, stem_pool=source.stem_pool,
                   pretrained=source.pretrained, pretrained_file=source.pretrained_file,
                   image_size=config.image_size or source.image_size)


def warm_start(model: VisualNet, folder: Path) -> None:
    """Copy the body (convolutions and FC layers) of a trained run; the head stays new."""
    state = load_checkpoint(folder)["model"]
    body = {key[len("body."):]: value for key, value in state.items() if key.startswith("body.")}
    try:
        model.body.load_state_dict(body)
    except RuntimeError:
        raise DeviseError(f"{folder} holds a network of another shape; cannot warm-start from it") from None


def load_teacher(config: TrainConfig, class_names: list[str], device: torch.device) -> SoftmaxTeacher | None:
    """With --distill, the --init softmax run as the teacher; it must know the same classes."""
    if not config.distill:
        return None
    teacher = load_run(config.init, device)
    if teacher.config.head != "softmax" or teacher.class_names != class_names:
        raise DeviseError(f"--distill needs {config.init} to be a softmax run over the same training classes")
    model = teacher.model.to(memory_format=torch.channels_last) if config.channels_last else teacher.model
    return SoftmaxTeacher(model, config.distill, config.bf16, config.distill_temperature)


# ---------------------------------------------------------------------------------------------
# The run


# Settings a resumed run cannot change: they shape the network, its label space or its data.
ARCHITECTURE = ("head", "body", "pretrained", "image_size", "width", "hidden", "stem_pool", "embed_hidden", "vectors", "vectors_path", "prompts",
                "random_vectors", "label_rule", "data", "unseen", "unseen_seed")


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True, device: str = "auto") -> Run:
    """Train a model as `config` says, writing everything into the run folder `config.out`.

    With `resume`, the run continues from its last checkpoint: same weights, optimiser state,
    epoch and batch order, so the result matches an uninterrupted run. With `config.init`, an
    embedding model starts from the body of a trained softmax run (the paper's warm start).
    `device` is auto, cpu, cuda or cuda:N; under torchrun each process trains its share of every
    batch (the global batch is `config.batch_size`) and rank 0 alone writes the run folder, which
    it holds for the whole run: a second writer is refused.
    """
    broken = problems(config)
    if broken:
        raise DeviseError(broken[0])
    config = with_image_size(inherit_architecture(with_absolute_paths(config)))  # config.toml: the same from anywhere
    broken = problems(config)  # again, now that the image size is known
    if broken:
        raise DeviseError(broken[0])
    dist, device = distributed(device)
    config = replace(config, bf16=use_bf16(device, config.bf16))  # config.toml records what is used
    if config.batch_size % dist.world_size:
        raise DeviseError(f"--batch-size {config.batch_size} does not split evenly over {dist.world_size} processes")
    folder = Path(config.out)
    check_folder(folder, config, resume)
    if config.log_to == "tensorboard":
        runs.summary_writer_class()  # a missing package is one line now, not after the data is loaded
    with runs.held(folder, "train") if dist.is_main else contextlib.nullcontext():
        return fit(config, folder, resume, progress and dist.is_main, device, dist)


def check_folder(folder: Path, config: TrainConfig, resume: bool) -> None:
    """Refuse, before anything is written: a resume without a run, a new run over an old one or
    over someone's files, and a resume that would change the network or its labels."""
    if resume:
        if not has_checkpoint(folder):
            raise DeviseError(f"cannot resume: {folder / CHECKPOINT} does not exist")
        saved = with_absolute_paths(load_config(folder))  # an older run's relative paths, read from here
        changed = [name for name in ARCHITECTURE if getattr(saved, name) != getattr(config, name)]
        if changed:
            name = changed[0]
            raise DeviseError(f"--resume cannot change --{name.replace('_', '-')} (the run has "
                              f"{getattr(saved, name)!r}, not {getattr(config, name)!r}); train a new run instead")
        return
    if has_checkpoint(folder):
        raise DeviseError(f"{folder} already holds a run: use --resume to continue it or another --out")
    foreign = runs.foreign_files(folder)
    if foreign:
        raise DeviseError(f"{folder} holds files devise did not write ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}): choose another --out")


def fit(config: TrainConfig, folder: Path, resume: bool, talk: bool, device: torch.device, dist: Distributed) -> Run:
    """The run itself, once the folder is held: data, model, optimiser, then epoch after epoch."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(config.seed)

    unseen, unseen_names = held_out_classes(config, talk) if not resume else (runs.read_unseen(folder, config), None)
    train_set, small_set, val_set = load_data(config, unseen, talk, dist)
    if train_set.num_classes < 2:
        raise DeviseError(f"the training set has {train_set.num_classes} class: at least two are needed")
    label_vectors, label_centre = (training_label_vectors(config, train_set.class_names, train_set.class_ids)
                                   if config.head == "embedding" else (None, None))
    preprocess = input_pipeline(config, train_set.images)
    model = build_network(config, train_set.num_classes, label_vectors,
                          pretrained=config.pretrained and not (resume or config.init)).to(device)
    objective = objective_for(config, None if label_vectors is None else label_vectors.to(device))
    if config.init and not resume:
        warm_start(model, Path(config.init))
    body_seen = body_trained_on(config, train_set.class_ids)
    teacher = load_teacher(config, train_set.class_names, device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    batches = dict(preprocess=preprocess, shard=(dist.rank, dist.world_size))
    train_loader = BatchLoader(train_set.to(device), config.batch_size, shuffle=True, augment=Augment.of(config),
                               seed=config.seed, drop_last=len(train_set) > config.batch_size,
                               limit=config.epoch_images, **batches)
    small_loader = None
    if small_set is not None:  # progressive resizing: the same images, smaller
        small_loader = BatchLoader(small_set.to(device), config.batch_size, shuffle=True,
                                   augment=Augment.of(config, config.small_size), seed=config.seed,
                                   drop_last=train_loader.drop_last, limit=config.epoch_images, **batches)
    val_loader = BatchLoader(evenly_spaced(val_set, config.val_images).to(device), config.eval_batch_size,
                             augment=NO_AUGMENT, **batches)
    log.info(start_line(config, train_set, val_set, device, dist, resume))
    train_features, val_features = frozen_features(config, model, preprocess, train_set, val_set, device, talk, dist)

    start_epoch, rows = 0, []
    if resume:
        start_epoch = restore(folder, model, optimizer)
        rows = [r for r in runs.read_metrics(folder) if r["epoch"] <= start_epoch]
        log.info(f"resumed after epoch {start_epoch}/{config.epochs}: {config.epochs - start_epoch} to go")
    if dist.is_main:  # only now, when nothing can fail before training: a failed resume changes nothing
        runs.save_config(folder, config)
        if unseen_names is not None and unseen:
            runs.write_unseen(folder, unseen, unseen_names)
        skipped = sorted(set(train_set.skipped + val_set.skipped + (small_set.skipped if small_set else [])))
        if skipped:
            runs.write_skipped(folder, skipped)
            log.info(f"skipped {len(skipped)} image{'s' if len(skipped) > 1 else ''} that do not decode; listed in "
                  f"{folder / runs.SKIPPED}")

    timed: dict[int, float] = {}  # this session's epochs' seconds, for the time left
    scalars = runs.epoch_scalars(folder, config.log_to) if dist.is_main else contextlib.nullcontext(lambda row: None)
    with freed_memory_kept(), scalars as record_scalars:  # each step reuses the last one's memory: no page faults
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            loader = small_loader if epoch < config.small_epochs else train_loader  # progressive resizing
            cached = train_features is not None and epoch < config.freeze_epochs
            fit_figures = train_one_epoch(model, train_features if cached else loader, objective, optimizer, config,
                                          epoch, progress=talk, teacher=teacher, dist=dist)
            train_seconds = time.perf_counter() - started
            check_finite(model, fit_figures["loss"], epoch)
            dist.share_buffers(model)
            val = (evaluate(model.head, val_features, objective, bf16=config.bf16, dist=dist) if cached
                   else evaluate(model, val_loader, objective, bf16=config.bf16, dist=dist))
            rows.append({"epoch": epoch + 1, "lr": fit_figures["lr"], "train_loss": fit_figures["loss"],
                         "train_top1": fit_figures["top1"], "train_top5": fit_figures["top5"], "val_loss": val["loss"],
                         "val_top1": val["top1"], "val_top5": val["top5"],
                         "epoch_seconds": time.perf_counter() - started,
                         "images_per_second": fit_figures["images"] / train_seconds})
            if dist.is_main:
                save_epoch(folder, rows, model, optimizer, train_set, preprocess, label_vectors, label_centre, body_seen)
                record_scalars(rows[-1])
            timed[epoch] = rows[-1]["epoch_seconds"]
            log.info(epoch_line(rows[-1], config.epochs, seconds_left(config, timed, epoch)))
    run = Run(config, model, preprocess, train_set.class_names, folder, label_vectors, train_set.class_ids, label_centre,
              body_seen)
    if dist.is_main:
        runs.write_summary(folder, summary(config, rows, {**describe_host(device), "processes": dist.world_size}))
        calibrate(run, train_set, val_set, talk)
    dist.barrier()  # the others wait until the folder is complete (the next stage reads it)
    return run


def start_line(config: TrainConfig, train_set: ImageSet, val_set: ImageSet, device: torch.device,
               dist: Distributed, resume: bool) -> str:
    """What starts, said before the first epoch (which may be minutes away): the model, the data,
    the epochs, where and in which precision."""
    body = config.body + (", pretrained" if config.pretrained else "") + f", {config.image_size} px"
    model = (f"a DeViSE model ({body}, into {config.vectors})" if config.head == "embedding"
             else f"a softmax model ({body})")
    val_count = min(config.val_images or len(val_set), len(val_set))
    data = (f"{config.data}: {len(train_set):,} images of {train_set.num_classes} classes"
            + (f" ({config.epoch_images:,} an epoch)" if config.epoch_images else "")
            + f", {val_count:,} to validate on")
    where = str(device) + (f" x {dist.world_size} processes" if dist.world_size > 1 else "")
    how = f"batches of {config.batch_size} on {where}, {'bf16 autocast' if config.bf16 else 'float32'}"
    if resume:
        return f"resuming {config.out} from its last checkpoint: {model} on {data}; {how}"
    return f"training {model} on {data}; {config.epochs} epochs, {how}; into {config.out}"


def epoch_line(row: dict, epochs: int, seconds_left: float | None) -> str:
    """One line per epoch, as a person reads it in a log: the figures, the speed, the epoch's time
    and the time left (none after the last epoch)."""
    seconds = row["epoch_seconds"]
    text = (f"epoch {int(row['epoch'])}/{epochs}  train loss {row['train_loss']:.3f} top-1 {row['train_top1']:.3f}  "
            f"val loss {row['val_loss']:.3f} top-1 {row['val_top1']:.3f} top-5 {row['val_top5']:.3f}  "
            f"{row['images_per_second']:,.0f} img/s  " + (f"{seconds:.1f} s" if seconds < 60 else duration(seconds)))
    return text + (f"  ETA {duration(seconds_left)}" if seconds_left is not None else "")


def epoch_kind(config: TrainConfig, epoch: int) -> tuple[bool, bool]:
    """What sets an epoch's pace besides the host: progressive resizing's small images, a frozen body."""
    return epoch < config.small_epochs, epoch < config.freeze_epochs


def seconds_left(config: TrainConfig, timed: dict[int, float], epoch: int) -> float | None:
    """The time the epochs after `epoch` will take, each at the mean pace of the epochs of its kind
    timed so far (of all of them, when none of its kind is); None after the last epoch."""
    later = range(epoch + 1, config.epochs)
    if not later:
        return None

    def pace(kind: tuple[bool, bool]) -> float:
        same = [seconds for done, seconds in timed.items() if epoch_kind(config, done) == kind] or list(timed.values())
        return sum(same) / len(same)

    return sum(pace(epoch_kind(config, later_epoch)) for later_epoch in later)


def frozen_features(config: TrainConfig, model: VisualNet, preprocess: Preprocess, train_set: ImageSet,
                    val_set: ImageSet, device: torch.device, talk: bool,
                    dist: Distributed) -> tuple[FeatureBatches | None, FeatureBatches | None]:
    """For a timm body kept frozen for some epochs: batches of its cached features, of each training
    image as is and flipped (the augmentation a frozen body's head trains with; a budget's share of
    the images, evenly spaced, when it sets one), and of the validation images. devise's own small
    bodies compute theirs batch by batch, freshly augmented. Rank 0 computes what the cache lacks
    while the other processes wait, then read it."""
    if own_body(config) or not config.freeze_epochs:
        return None, None
    train_set = evenly_spaced(first_images(train_set, config.train_limit), config.epoch_images)
    val_set = evenly_spaced(val_set, config.val_images)

    def features(data: ImageSet, views: tuple[str, ...]) -> list[torch.Tensor]:
        return cached_features(model.body, preprocess, data, views=views, device=device, bf16=config.bf16,
                               batch_size=config.eval_batch_size, progress=talk, what=config.body,
                               cache_dir=cache_folder(config.cache_dir))

    if not dist.is_main:
        dist.barrier()
    train_views, val_views = features(train_set, ("plain", "flip") if config.flip else ("plain",)), features(val_set, ("plain",))
    if dist.is_main:
        dist.barrier()
    shard = (dist.rank, dist.world_size)
    return (FeatureBatches(train_views, train_set.labels, config.batch_size, shuffle=True, seed=config.seed,
                           drop_last=len(train_set) > config.batch_size, shard=shard, device=device),
            FeatureBatches(val_views, val_set.labels, config.eval_batch_size, shard=shard, device=device))


def body_trained_on(config: TrainConfig, class_ids: list[str]) -> dict:
    """What the run's body has been trained on once this run is done, for honest zero-shot figures:
    the pretrained weights' classes or the warm-start run's, and this run's own classes unless the
    body stays frozen throughout. `ids` None: not known (a timm weight of unknown origin)."""
    trains = config.freeze_epochs < config.epochs
    if config.init:
        before = read_body_trained_on(config.init)
    elif config.pretrained:
        description, ids = trained_on(config.body, True, config.pretrained_file)
        before = {"description": description, "ids": ids}
    else:
        before = {"description": "", "ids": []}
    if not trains:
        return before
    own = f"its {len(class_ids)} training classes"
    return {"description": f"{before['description']}, then {own}" if before["description"] else own,
            "ids": None if before["ids"] is None else sorted(set(before["ids"]) | set(class_ids))}


def calibrate(run: Run, train_set: ImageSet, val_set: ImageSet, talk: bool) -> None:
    """A frozen-body DeViSE run with held-out classes stores its calibrated-stacking constant. (A
    softmax run's, for ConSE, depends on the label space it is compared in: `devise zeroshot`
    chooses it.)"""
    if run.config.head == "embedding" and class_split_applies(run.config, train_set.num_classes):
        log.info(f"choosing the calibrated-stacking constant on {SPLITS} class splits of the seen classes")
        def features_of(data: ImageSet) -> torch.Tensor:
            return dataset_features(run.model, run.preprocess, data, device=run.device, bf16=run.config.bf16,
                                    batch_size=run.config.eval_batch_size, progress=talk,
                                    cache_dir=cache_folder(run.config.cache_dir), what=run.config.body).to(run.device)

        runs.write_calibration(run.folder, class_split_constant(run.config, features_of, train_set, val_set,
                                                                run.label_vectors, progress=talk))


def restore(folder: Path, model: VisualNet, optimizer: torch.optim.Optimizer) -> int:
    """Load a run's last checkpoint into the model and optimiser; returns its epoch."""
    state = load_checkpoint(folder)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError):  # another shape, or an older devise's parameter groups
        raise DeviseError(f"{folder / CHECKPOINT}: its weights or optimiser state do not fit this run's "
                          "settings or this version of devise; start the run again in a new --out") from None
    return int(state["epoch"])


def check_finite(model: VisualNet, loss: float, epoch: int) -> None:
    """Stop a run whose loss or weights are no longer finite, before its checkpoint is overwritten."""
    if math.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return
    kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "no checkpoint was written"
    raise RunFailed(f"training diverged in epoch {epoch + 1} (training loss {loss}, or weights no longer finite); "
                    f"{kept}: try a lower --lr")


def save_epoch(folder: Path, rows: list[dict], model: VisualNet, optimizer: torch.optim.Optimizer,
               train_set: ImageSet, preprocess: Preprocess, label_vectors: torch.Tensor | None,
               label_centre: torch.Tensor | None, body_seen: dict) -> None:
    """After an epoch: its metrics row, the checkpoint (CPU tensors, with the classes' names and
    ids: the ids place them in WordNet for hierarchical precision), the curves."""
    state = cpu_copy({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": int(rows[-1]["epoch"]),
                      "class_names": train_set.class_names, "class_ids": train_set.class_ids, "normalizer": [list(preprocess.mean), list(preprocess.std)],
                      "input": preprocess.record(), "body_trained_on": body_seen})
    if label_vectors is not None:
        state["label_vectors"] = label_vectors.cpu()
    if label_centre is not None:
        state["label_centre"] = label_centre.cpu()
    runs.save_epoch_record(folder, rows, state)
    plot_learning_curves({folder.name: rows}, folder / "curves.png")


def summary_text(summary: dict, folder: Path) -> str:
    """The end of `devise train` in a few lines a person reads (summary.json holds every figure)."""
    def figure(key: str) -> str:
        return "-" if summary.get(key) is None else f"{summary[key]:.3f}"

    precision = "bf16" if summary.get("bf16") else "float32"
    epochs = f"{summary['epochs']} epoch" + ("s" if summary["epochs"] != 1 else "")
    processes = summary["host"].get("processes", 1)
    where = summary["host"]["device"] + (f" x {processes} processes" if processes > 1 else "")
    return (f"trained {epochs} in {duration(summary['train_minutes'] * 60)} on {where} ({precision}): "
            f"val top-1 {figure('val_top1')}, top-5 {figure('val_top5')} (best top-1 {figure('best_val_top1')})\n"
            f"saved {folder} (checkpoint, {runs.METRICS}, {runs.CURVES}, {runs.SUMMARY}); "
            f"next: devise evaluate {folder}")


def summary(config: TrainConfig, rows: list[dict], host: dict) -> dict:
    """The figures of a finished run, for summary.json."""
    last = rows[-1] if rows else {}
    return {
        "head": config.head, "data": config.data, "body": config.body, "pretrained": config.pretrained,
        "image_size": config.image_size,
        "epochs": int(last.get("epoch", 0)),
        "val_top1": last.get("val_top1"), "val_top5": last.get("val_top5"),
        "best_val_top1": max((r["val_top1"] for r in rows), default=None),
        "train_minutes": sum(r["epoch_seconds"] for r in rows) / 60,
        "peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "bf16": config.bf16, "host": host,
    }
