"""The `devise` command: parse arguments, call the library, print. No logic of its own.

Every mistake a user can make surfaces as a `DeviseError` and ends as one line on stderr with
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from devise import __version__
from devise.errors import DeviseError


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field (`batch_size` -> `--batch-size`), default None so that
    only the flags a user typed override the TOML file and the defaults."""
    from devise.config import TrainConfig

    defaults = TrainConfig()
    group = parser.add_argument_group("run settings (also accepted as keys of --config FILE)")
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.type in ("bool", "bool | None", bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"default: {default}")
        else:
            kind = {"int": int, "float": float}.get(str(field.type), str)
            group.add_argument(flag, type=kind, default=None, metavar=field.name.upper(), help=f"default: {default}")


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N (default: auto)")


def is_main_process() -> bool:
    """False in the processes torchrun starts besides rank 0: they train, rank 0 reports."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def config_from_args(args: argparse.Namespace):
    """Defaults <- --preset <- saved run config (on --resume) <- --config FILE <- flags typed."""
    from devise.config import TrainConfig, read_toml
    from devise.reproduce import preset_settings

    values: dict = {}
    if args.preset:
        values.update(preset_settings(args.preset, args.head or "softmax"))
    out = args.out
    if args.resume:
        if out is None:
            raise DeviseError("--resume needs --out RUN_FOLDER")
        saved = Path(out) / "config.toml"
        if not saved.is_file():
            raise DeviseError(f"cannot resume: {saved} does not exist")
        values.update(read_toml(saved))
    if args.config:
        values.update(read_toml(args.config))
    for field in fields(TrainConfig):
        typed = getattr(args, field.name)
        if typed is not None:
            values[field.name] = typed
    return TrainConfig.from_dict(values, args.config or "settings")


def cmd_train(args: argparse.Namespace) -> int:
    from devise.train import train

    config = config_from_args(args)
    run = train(config, resume=args.resume, progress=not args.quiet, device=args.device)
    if is_main_process():
        print(json.dumps(json.loads((run.folder / "summary.json").read_text())))
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from devise.plots import plot_learning_curves
    from devise.train import read_metrics

    runs = {}
    for folder in args.runs:
        rows = read_metrics(Path(folder) / "metrics.csv")
        if not rows:
            raise DeviseError(f"{folder}: no metrics.csv with any epoch in it")
        runs[Path(folder).name] = rows
    if args.labels:
        if len(args.labels) != len(args.runs):
            raise DeviseError("--labels needs one label per run")
        runs = dict(zip(args.labels, runs.values()))
    print(plot_learning_curves(runs, Path(args.out), args.title))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from devise.data import load_dataset

    for split in args.splits:
        data = load_dataset(args.data, args.data_root, split, args.image_size, args.cache_dir, args.download,
                            progress=not args.quiet)
        means = data.images[:: max(1, len(data) // 20000)].float().mean(dim=(0, 2, 3))
        print(json.dumps({"data": args.data, "split": split, "images": len(data), "classes": data.num_classes,
                          "image_size": data.image_size, "channel_means": [round(m, 1) for m in means.tolist()],
                          "first_classes": data.class_names[:3]}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from devise.evaluation import evaluate_run
    from devise.plots import plot_hit_at_k

    if args.labels and len(args.labels) != len(args.runs):
        raise DeviseError("--labels needs one label per run")
    results = {}
    for folder in args.runs:
        result = evaluate_run(folder, args.split, args.data_root, progress=not args.quiet, device=args.device)
        name = args.labels[len(results)] if args.labels else Path(folder).name
        results[name] = result
        hits = " ".join(f"{key}={value:.4f}" for key, value in result.items() if key.startswith("hit@"))
        print(f"{name}: {hits}")
    if args.plot:
        chance = next(iter(results.values()))["chance"]
        print(plot_hit_at_k(results, Path(args.plot), chance))
    return 0


def cmd_vectors_check(args: argparse.Namespace) -> int:
    from devise.data import load_dataset
    from devise.vectors import label_coverage, load_label_space, read_replacements

    data = load_dataset(args.data, args.data_root, args.split, cache_dir=args.cache_dir, progress=not args.quiet)
    space = load_label_space(args.vectors, args.vectors_path)
    replacements = read_replacements(args.replacements) if args.replacements else None
    rows = label_coverage(space, data.class_names, args.rule, replacements)
    found = sum(row["found"] for row in rows)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            status = "ok" if row["found"] else "MISSING"
            used = "; ".join(row["used"]) if row["found"] else "unknown: " + ", ".join(row["unknown"])
            print(f"{status} {row['label']!r} -> {used}")
    print(f"{found}/{len(rows)} labels have vectors in {space.name} (rule: {args.rule})", file=sys.stderr)
    return 0 if found == len(rows) else 1


def cmd_zeroshot(args: argparse.Namespace) -> int:
    from devise.zeroshot import run_zero_shot

    examples = args.examples
    if args.example_images:
        try:
            examples = [int(i) for i in args.example_images.split(",")]
        except ValueError:
            raise DeviseError(f"--example-images takes comma-separated numbers, not {args.example_images!r}") from None
    results = run_zero_shot(args.runs, args.target, args.target_root, args.vocabulary, args.vectors, args.conse_top,
                            args.out, examples, progress=not args.quiet, download=args.download, device=args.device)
    print(f"target {results['target']}: {results['images']} images, {results['target_classes']} classes, "
          f"label space {results['label_space']}, vocabulary {results['vocabulary']}")
    for name, entry in results["models"].items():
        hits = " ".join(f"{k}={entry[k]:.3f}" for k in entry if k.startswith("hit@"))
        extra = "".join(f" {k[5:]}={entry[k]:.3f}" for k in ("gzsl_seen", "gzsl_unseen", "gzsl_harmonic") if k in entry)
        print(f"{name}: {hits} per-class-top1={entry['per_class_top1']:.3f} similarity={entry['similarity']:.3f} "
              f"lift={entry['lift']:.3f}{extra}")
    print(f"control similarity (random pairs): {results['control_similarity']:.3f}")
    print(f"written to {results['folder']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from devise.predict import Predictor

    predictor = Predictor.load(args.run, args.vocabulary, device=args.device, conse=args.conse)
    results = predictor.predict(args.images, top=args.top)
    for image, ranked in zip(args.images, results):
        if args.json:
            print(json.dumps({"image": image, "labels": [{"label": l, "score": round(s, 5)} for l, s in ranked]}))
        else:
            print(f"{image}: " + ", ".join(f"{label} ({score:.3f})" for label, score in ranked))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from devise.report import write_report

    print(write_report(args.runs, args.out, args.title, args.zeroshot or ()))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from devise.reproduce import reproduce

    summary = reproduce(args.preset, args.data_root, args.out, args.target, args.target_root, args.download,
                        args.cache_dir, progress=not args.quiet, device=args.device, budget=args.budget)
    if summary is not None:  # None in torchrun's processes other than rank 0
        print_summary(summary, Path(args.out))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from devise.reproduce import reproduce

    print_summary(reproduce("demo", out=args.out, progress=not args.quiet, device=args.device), Path(args.out))
    return 0


def print_summary(summary: dict, out: Path) -> None:
    from devise.reproduce import summary_table

    print(summary_table(summary))
    print(f"report: {out / 'report.html'}")


def build_parser() -> argparse.ArgumentParser:
    from devise.data import DATASETS
    from devise.reproduce import PRESETS

    parser = argparse.ArgumentParser(prog="devise", description=(
        "Train and evaluate DeViSE-style visual-semantic embedding models."))
    parser.add_argument("--version", action="version", version=f"devise {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train a softmax or embedding model into a run folder",
                                description="Train a model; settings from flags and/or a TOML file.")
    train.add_argument("--config", help="TOML file of run settings (flags typed override it)")
    train.add_argument("--preset", choices=list(PRESETS),
                       help="start from a preset's settings for --head (the ones `devise reproduce` uses)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_device_flag(train)
    add_config_flags(train)
    train.set_defaults(func=cmd_train)

    curves = commands.add_parser("curves", help="overlay the learning curves of several runs in one figure")
    curves.add_argument("runs", nargs="+", help="run folders")
    curves.add_argument("--out", default="curves.png", help="PNG file to write (default: curves.png)")
    curves.add_argument("--labels", nargs="+", help="legend names, one per run (default: folder names)")
    curves.add_argument("--title", help="figure title")
    curves.set_defaults(func=cmd_curves)

    evaluate = commands.add_parser("evaluate", help="hit@k of runs on their val split; metrics.json and a plot")
    evaluate.add_argument("runs", nargs="+", help="run folders")
    evaluate.add_argument("--split", help="split to evaluate (default: the run's val split)")
    evaluate.add_argument("--data-root", help="dataset location, if not the one the run was trained from")
    evaluate.add_argument("--plot", help="PNG of hit@k against k for all runs")
    evaluate.add_argument("--labels", nargs="+", help="names of the runs in the output and plot")
    evaluate.add_argument("--quiet", action="store_true")
    add_device_flag(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    zeroshot = commands.add_parser("zeroshot", help="zero-shot hit@k and semantic similarity: DeViSE, ConSE, softmax",
                                   description="Embedding runs are evaluated as DeViSE; softmax runs as themselves "
                                               "and as ConSE.")
    zeroshot.add_argument("runs", nargs="+", help="run folders (embedding and/or softmax)")
    zeroshot.add_argument("--target", required=True,
                          help="unseen (the classes the runs held out), cifar100, folder, tiny-imagenet or toy")
    zeroshot.add_argument("--target-root", help="where the target dataset is (folder, CIFAR-100 root, ...)")
    zeroshot.add_argument("--vocabulary", default="target,train",
                          help="comma list of target, train, words:N, file:PATH (default: target,train)")
    zeroshot.add_argument("--vectors", help="label space when no embedding run is given (default: glove-6b-50d)")
    zeroshot.add_argument("--conse-top", type=int, default=10, help="ConSE's T (default: 10)")
    zeroshot.add_argument("--out", help="output folder (default: RUN/zeroshot-TARGET)")
    zeroshot.add_argument("--download", action="store_true", help="fetch the target dataset (CIFAR-100) if missing")
    zeroshot.add_argument("--examples", type=int, default=6, help="random target images in examples.png (default: 6)")
    zeroshot.add_argument("--example-images", help="chosen target image indices for examples.png, e.g. 3,17,42")
    zeroshot.add_argument("--quiet", action="store_true")
    add_device_flag(zeroshot)
    zeroshot.set_defaults(func=cmd_zeroshot)

    predict = commands.add_parser("predict", help="ranked labels with scores for image files")
    predict.add_argument("run", help="run folder")
    predict.add_argument("images", nargs="+", help="image files (any size; greyscale and RGBA are fine)")
    predict.add_argument("--vocabulary", default="train",
                         help="comma list of train, words:N, file:PATH (default: train); embedding or --conse runs")
    predict.add_argument("--top", type=int, default=5)
    predict.add_argument("--conse", action="store_true", help="for a softmax run: rank the vocabulary through ConSE")
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    add_device_flag(predict)
    predict.set_defaults(func=cmd_predict)

    report = commands.add_parser("report", help="one self-contained HTML page about runs and zero-shot results")
    report.add_argument("runs", nargs="+", help="run folders")
    report.add_argument("--zeroshot", nargs="+", help="zero-shot output folders (default: RUN/zeroshot-* found)")
    report.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    report.add_argument("--title", default="devise report")
    report.set_defaults(func=cmd_report)

    reproduce = commands.add_parser("reproduce", help="the whole experiment: train, evaluate, zero-shot, report")
    reproduce.add_argument("--preset", default="cpu", choices=list(PRESETS),
                           help="settings: cpu (about 10 min on a 2-core CPU with native bf16), cpu-long (under "
                                "an hour there), gpu (one GPU), paper, demo (default: cpu)")
    reproduce.add_argument("--data-root", help="Tiny ImageNet zip or folder")
    reproduce.add_argument("--target", default="unseen",
                           help="zero-shot target: unseen (held-out classes, default), cifar100, folder")
    reproduce.add_argument("--target-root", help="where the target dataset is")
    reproduce.add_argument("--download", action="store_true", help="fetch datasets that are not on disk")
    reproduce.add_argument("--cache-dir")
    reproduce.add_argument("--out", default="runs/reproduce", help="output folder (default: runs/reproduce)")
    reproduce.add_argument("--budget", type=float, metavar="MINUTES",
                           help="finish within this many minutes: measure this host's speed first, then train "
                                "each epoch on the share of its images that fits")
    reproduce.add_argument("--quiet", action="store_true")
    add_device_flag(reproduce)
    reproduce.set_defaults(func=cmd_reproduce)

    demo = commands.add_parser("demo", help="the whole pipeline on the generated toy set, in about a minute")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--quiet", action="store_true")
    add_device_flag(demo)
    demo.set_defaults(func=cmd_demo)

    from devise.vectors import DEFAULT_RULE, RULES, SOURCES

    vectors = commands.add_parser("vectors", help="word-vector tools")
    vector_commands = vectors.add_subparsers(dest="vectors_command", metavar="COMMAND", required=True)
    check = vector_commands.add_parser("check", help="which labels of a dataset have vectors, and from which words")
    check.add_argument("--data", default="tiny-imagenet", help=f"one of {', '.join(DATASETS)}")
    check.add_argument("--data-root")
    check.add_argument("--split", default="val")
    check.add_argument("--cache-dir")
    check.add_argument("--vectors", default="glove-6b-50d", choices=SOURCES, help="label space (default: glove-6b-50d)")
    check.add_argument("--vectors-path", help="vectors file for the file formats")
    check.add_argument("--rule", default=DEFAULT_RULE, choices=RULES, help=f"synonym rule (default: {DEFAULT_RULE})")
    check.add_argument("--replacements", help="file mapping labels to replacement words")
    check.add_argument("--json", action="store_true", help="one JSON object per label")
    check.add_argument("--quiet", action="store_true")
    check.set_defaults(func=cmd_vectors_check)

    data = commands.add_parser("data", help="load (and cache) a dataset and print what it holds")
    data.add_argument("--data", default="tiny-imagenet", help=f"one of {', '.join(DATASETS)}")
    data.add_argument("--data-root", help="zip, folder, ... of the dataset")
    data.add_argument("--splits", nargs="+", default=["train", "val"])
    data.add_argument("--image-size", type=int)
    data.add_argument("--cache-dir")
    data.add_argument("--download", action="store_true", help="fetch the dataset when it is not on disk")
    data.add_argument("--quiet", action="store_true")
    data.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DeviseError as error:
        print(f"devise: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("devise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
