"""The `devise` command: parse arguments, call the library, print. No logic of its own.

Every mistake a user can make surfaces as a `DeviseError` and ends as one line on stderr with
exit status 2 (1 for a `RunFailed`: the input was fine, the work could not go on); anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from devise.config import DATASETS, DEFAULT_RULE, LABEL_RULES, LABEL_SPACES, presets
from devise.errors import DeviseError, RunFailed
from devise.files import describe
from devise.log import configure, quiet_third_parties
from devise.version import __version__


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field (`batch_size` -> `--batch-size`), its help, choices and type
    from the field itself; default None, so that only the flags a user typed override the file and
    the preset."""
    from devise.config import choices_of, default_of, help_of, settings, value_type

    group = parser.add_argument_group("run settings (also accepted as keys of --config FILE)")
    for item in settings():
        default = default_of(item)
        text = (help_of(item) + ("" if default is None else f" (default: {default})")).replace("%", "%%")
        flag = "--" + item.name.replace("_", "-")
        if value_type(item.name) is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            group.add_argument(flag, type=value_type(item.name), default=None, choices=choices_of(item.name),
                               metavar=item.name.upper(), help=text)


def is_main_process() -> bool:
    """False in the processes torchrun starts besides rank 0: they train, rank 0 reports."""
    return int(os.environ.get("RANK", "0")) == 0


def config_from_args(args: argparse.Namespace):
    """Defaults <- --preset <- saved run config (on --resume) <- --config FILE <- flags typed."""
    from devise.config import TrainConfig, config_from, preset_settings, read_settings
    from devise.model.checkpoint import CONFIG

    values: dict = {}
    if args.preset:
        values.update(preset_settings(args.preset, args.head or "softmax"))
    if args.resume:
        if args.out is None:
            raise DeviseError("--resume needs --out RUN_FOLDER")
        saved = Path(args.out) / CONFIG
        if not saved.is_file():
            raise DeviseError(f"cannot resume: {saved} does not exist")
        values.update(read_settings(saved))
    if args.config:
        values.update(read_settings(args.config))
    for field in fields(TrainConfig):
        typed = getattr(args, field.name)
        if typed is not None:
            values[field.name] = typed
    return config_from(values, args.config or "settings")


def cmd_train(args: argparse.Namespace) -> int:
    from devise.training import runs
    from devise.training.loop import summary_text, train

    run = train(config_from_args(args), resume=args.resume, progress=not args.quiet, device=args.device)
    if is_main_process():
        summary = runs.read_summary(run.folder)
        print(json.dumps(summary) if args.json else summary_text(summary, run.folder))
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from devise.experiment.report import loss_kind, read_settings
    from devise.plots import plot_learning_curves
    from devise.training import runs

    curves = {}
    for folder in args.runs:
        rows = runs.read_metrics(Path(folder))
        if not rows:
            raise DeviseError(f"{folder}: no {runs.METRICS} with any epoch in it")
        curves[Path(folder).name] = rows
    losses = {name: loss_kind(read_settings(Path(folder))) for name, folder in zip(curves, args.runs)}
    if args.names:
        if len(args.names) != len(args.runs):
            raise DeviseError("--names needs one name per run")
        curves = dict(zip(args.names, curves.values()))
        losses = dict(zip(args.names, losses.values()))
    print(plot_learning_curves(curves, Path(args.out), args.title, losses=losses))  # a loss axis per kind
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from devise.data import load_dataset

    if args.clean:
        return clean_cache(args.cache_dir)
    for split in args.splits:
        data = load_dataset(args.data, args.data_root, split, image_size=args.image_size, cache_dir=args.cache_dir, download=args.download,
                            progress=not args.quiet)
        means = data.images[:: max(1, len(data) // 20000)].float().mean(dim=(0, 2, 3))
        print(json.dumps({"data": args.data, "split": split, "images": len(data), "classes": data.num_classes,
                          "image_size": data.image_size, "channel_means": [round(m, 1) for m in means.tolist()],
                          "first_classes": data.class_names[:3]}))
    return 0


def clean_cache(cache_dir: str | None) -> int:
    """`devise data --clean`: say what devise's cache folder holds and how much, then remove it."""
    from devise.data.cache import cache_entries, cache_folder, remove_entries

    folder = cache_folder(cache_dir)
    entries = cache_entries(folder)
    if not entries:
        print(f"devise's cache {folder} is empty: nothing to remove")
        return 0
    total = sum(size for _, size in entries)
    count = f"{len(entries)} entr{'ies' if len(entries) > 1 else 'y'}"
    print(f"removing devise's cache {folder}: {count}, {size_text(total)}")
    for path, size in entries:
        print(f"  {size_text(size):>9}  {path.name}")
    try:
        remove_entries(entries)
    except OSError as error:
        raise RunFailed(f"could not remove all of {folder}: {describe(error)}") from None
    print(f"removed {size_text(total)}")
    return 0


def size_text(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from devise.evaluation.evaluate import check_evaluable, evaluate_run
    from devise.plots import plot_hit_at_k

    if args.names and len(args.names) != len(args.runs):
        raise DeviseError("--names needs one name per run")
    for folder in args.runs:  # a mistake about the last model costs no evaluation of the first
        check_evaluable(folder, args.data)
    results = {}
    for folder in args.runs:
        result = evaluate_run(folder, split=args.split, data_root=args.data_root, progress=not args.quiet,
                              device=args.device, precision=args.precision, data=args.data)
        name = args.names[len(results)] if args.names else Path(folder).name
        results[name] = result
        hits = " ".join(f"{key}={value:.4f}" for key, value in result.items() if key.startswith("hit@"))
        print(json.dumps({"name": name, **result}) if args.json else f"{name}: {hits}", flush=True)
    if args.plot:
        chance = next(iter(results.values()))["chance"]
        print(plot_hit_at_k(results, Path(args.plot), chance))
    return 0


def cmd_vectors_check(args: argparse.Namespace) -> int:
    from devise.data import load_dataset
    from devise.labels.run_labels import read_replacements
    from devise.labels.spaces import label_coverage, load_label_space

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
    from devise.evaluation.zeroshot import ZeroShotRequest, run_zero_shot
    from devise.labels.vocabulary import check_vocabulary

    check_models(args.runs)  # before any model or image is loaded
    check_vocabulary(args.vocabulary, ["target", "train"])
    examples = args.examples
    if args.example_images:
        try:
            examples = [int(i) for i in args.example_images.split(",")]
        except ValueError:
            raise DeviseError(f"--example-images takes comma-separated numbers, not {args.example_images!r}") from None
    results = run_zero_shot(ZeroShotRequest(
        args.runs, args.target, args.target_root, args.vocabulary, vectors=args.vectors, prompts=args.prompts,
        image_size=args.image_size, conse_top=args.conse_top, out=args.out, examples=examples, progress=not args.quiet,
        download=args.download, device=args.device, replacements=args.replacements, cache_dir=args.cache_dir,
        precision=args.precision))
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"target {results['target']}: {results['images']:,} images of {results['target_classes']} classes; "
          f"label space {results['label_space']}; vocabulary {results['vocabulary']}")
    print(zero_shot_table(results))
    print(f"control similarity (random label pairs): {results['control_similarity']:.3f}")
    print(f"every figure (hp@k, per-class top-1, calibration): {Path(results['folder']) / 'zeroshot.json'}")
    return 0


def zero_shot_table(results: dict) -> str:
    """A line per model: its hit@1 and hit@5 over the target's classes (and over the wider
    vocabulary's candidates), similarity and its lift over the control, generalised zero-shot's harmonic mean,
    and what its figures may be called (`regime`: zero-shot only where the body never saw a
    target class)."""
    wider = results["vocabulary"] != "target"
    header = ["model", "method", "hit@1", "hit@5"] + (["candidates", "vocab hit@1", "vocab hit@5"] if wider else [])
    header += ["similarity (lift)", "GZSL H", "regime"]
    rows = [header]
    for name, entry in results["models"].items():
        figures = [f"{entry.get(key, float('nan')):.3f}" for key in ("hit@1", "hit@5")]
        if wider:
            figures += [f"{entry['vocabulary_size']:,}"] + [
                f"{entry.get(key, float('nan')):.3f}" for key in ("vocabulary_hit@1", "vocabulary_hit@5")]
        harmonic = entry.get("gzsl_cal_harmonic", entry.get("gzsl_harmonic"))
        rows.append([name, entry["kind"], *figures,
                     f"{entry['similarity']:.3f} ({entry['lift']:+.3f})",
                     "-" if harmonic is None else f"{harmonic:.3f}", entry.get("body", {}).get("regime", "zero-shot")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def cmd_predict(args: argparse.Namespace) -> int:
    from devise.labels.vocabulary import check_vocabulary
    from devise.model.export import load
    from devise.model.inference import check_image_files

    if args.top <= 0:
        raise DeviseError(f"--top must be positive, not {args.top}")
    check_models([args.run])  # every input checked before a model is loaded or a label encoded
    check_image_files(args.images)
    check_vocabulary(args.vocabulary, ["train"])
    model = load(args.run, device=args.device, vectors=args.vectors, prompts=args.prompts, replacements=args.replacements,
                 precision=args.precision)
    # A softmax run names its own labels by probability unless asked for ConSE; a stock classifier is ConSE.
    method = "conse" if args.conse or model.config.get("stock") else None
    if model.kind == "softmax" and method is None:
        results = model.classify(args.images, top=args.top, method="softmax")
    else:
        results = model.classify(args.images, model.vocabulary(args.vocabulary), top=args.top, method=method)
    for image, ranked in zip(args.images, results):
        if args.json:
            print(json.dumps({"image": image, "labels": [{"label": l, "score": round(s, 5)} for l, s in ranked]}))
        else:
            print(f"{image}: " + ", ".join(f"{label} ({score:.3f})" for label, score in ranked))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from devise.model.export import export

    out = export(args.run, args.out, onnx=args.onnx, replacements=args.replacements)
    print("\n".join(str(path) for path in sorted(out.iterdir()) if not path.name.startswith(".")))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from devise.serve.app import serve

    check_models(args.models)
    serve(args.models, host=args.host, port=args.port, device=args.device, words=args.words, labels_file=args.labels,
          max_mb=args.max_mb, top=args.top, precision=args.precision)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from devise.experiment.report import write_report

    print(write_report(args.runs, args.out, title=args.title, zero_shot=args.zeroshot or ()))
    return 0


def check_models(paths: list[str]) -> None:
    """Each path a model `devise.load` takes, checked before any is loaded: a typo in the last costs nothing."""
    from devise.model.export import model_kind

    for path in paths:
        model_kind(path)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from devise.experiment.reproduce import reproduce

    summary = reproduce(args.preset, data_root=args.data_root, out=args.out, target=args.target, target_root=args.target_root, download=args.download,
                        cache_dir=args.cache_dir, progress=not args.quiet, device=args.device, budget=args.budget)
    if summary is not None:  # None in torchrun's processes other than rank 0
        print_summary(summary, Path(args.out), args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from devise.experiment.reproduce import reproduce

    out = Path(args.out)
    print_summary(reproduce("demo", out=out, progress=not args.quiet, device=args.device), out, args.json)
    if not args.json:
        print(f"next: devise predict {out / 'devise'} IMAGE --vocabulary train   (your image, this model)\n"
              f"      devise serve {out / 'devise'}   (the same in a web page)\n"
              "      devise reproduce --data-root DIR --preset cpu   (the main job on Tiny ImageNet: README.md)")
    return 0


def print_summary(summary: dict, out: Path, as_json: bool = False) -> None:
    from devise.experiment.reproduce import summary_table

    if as_json:
        print(json.dumps(summary))
        return
    print(summary_table(summary))
    print(f"report: {out / 'report.html'}")


# ---------------------------------------------------------------------------------------------
# Options several commands share, declared once


def options(*names: str) -> argparse.ArgumentParser:
    """A parent parser holding the shared options a command takes."""
    parent = argparse.ArgumentParser(add_help=False)
    shared = {
        "quiet": lambda: (parent.add_argument("--quiet", action="store_true",
                                              help="no progress bars or per-epoch and per-stage lines"),
                          parent.add_argument("--verbose", action="store_true", help="debugging lines too")),
        "device": lambda: parent.add_argument("--device", default="auto", help=(
            "auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N (default: auto)")),
        "precision": lambda: parent.add_argument("--precision", choices=("float32", "bf16", "auto"), default="float32",
                                                 help="the model's arithmetic: float32 (default: the same results as "
                                                      "its ONNX export and any other host), bf16, or auto (bf16 where "
                                                      "the device computes it natively: faster, results off by bf16's "
                                                      "rounding)"),
        "data_root": lambda: parent.add_argument("--data-root", help="the dataset's zip or folder"),
        "cache_dir": lambda: parent.add_argument("--cache-dir", help="where decoded datasets are kept "
                                                 "(default: $DEVISE_CACHE or ~/.cache/devise)"),
        "download": lambda: parent.add_argument("--download", action="store_true",
                                                help="fetch datasets that are not on disk"),
        "replacements": lambda: parent.add_argument("--replacements", metavar="FILE", help=(
            "lines 'label<TAB>words' giving a vector to labels the label space does not know")),
        "json": lambda: parent.add_argument("--json", action="store_true", help=(
            "print the result as one JSON object instead of readable lines (the result's file holds it too)")),
    }
    for name in names:
        shared[name]()
    return parent


def add_stock_space(parser: argparse.ArgumentParser) -> None:
    """--vectors and --prompts: the label space a pretrained classifier's labels are read in."""
    parser.add_argument("--vectors", choices=LABEL_SPACES, help=(
        "label space of a pretrained classifier named instead of a run (default: glove-6b-50d)"))
    parser.add_argument("--prompts", help="with --vectors minilm: default, hypernym or a file of templates")


class ListPretrained(argparse.Action):
    """`devise --list-pretrained`: the weights devise knows, one JSON line each, then exit."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from devise.model.pretrained import list_pretrained

        for weights in list_pretrained():
            print(json.dumps(weights))
        parser.exit()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line too (usage stays in --help)."""

    def error(self, message: str):
        self.exit(2, f"devise: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="devise", description=(
        "Train and evaluate DeViSE-style visual-semantic embedding models."))
    parser.add_argument("--version", action="version", version=f"devise {__version__}")
    parser.add_argument("--list-pretrained", action=ListPretrained,
                        help="list the pretrained weights devise knows (source, licence, input size, training classes)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", parents=[options("quiet", "device", "json")],
                                help="train a softmax or embedding model into a run folder",
                                description="Train a model; settings from flags and/or a TOML file.")
    train.add_argument("--config", help="TOML file of run settings (flags typed override it)")
    train.add_argument("--preset", choices=list(presets()),
                       help="start from a preset's settings for --head (the ones `devise reproduce` uses)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_config_flags(train)
    train.set_defaults(func=cmd_train)

    curves = commands.add_parser("curves", help="overlay the learning curves of several runs in one figure")
    curves.add_argument("runs", nargs="+", help="run folders")
    curves.add_argument("--out", default="curves.png", help="PNG file to write (default: curves.png)")
    curves.add_argument("--names", nargs="+", help="legend names, one per run (default: folder names)")
    curves.add_argument("--title", help="figure title")
    curves.set_defaults(func=cmd_curves)

    evaluate = commands.add_parser("evaluate", parents=[options("quiet", "device", "precision", "json")],
                                   help="hit@k of runs on their val split; metrics.json and a plot")
    evaluate.add_argument("runs", nargs="+", help="run folders, exported model folders or pretrained classifiers' "
                                                  "names (devise --list-pretrained; these two need --data)")
    evaluate.add_argument("--data", choices=DATASETS, help="the dataset to evaluate an exported model or a pretrained "
                                                           "classifier on (a run folder evaluates on its own)")
    evaluate.add_argument("--split", help="split to evaluate (default: the run's val split)")
    evaluate.add_argument("--data-root", help="dataset location, if not the one the run was trained from")
    evaluate.add_argument("--plot", help="PNG of hit@k against k for all runs")
    evaluate.add_argument("--names", nargs="+", help="names of the runs in the output and plot")
    evaluate.set_defaults(func=cmd_evaluate)

    zeroshot = commands.add_parser("zeroshot", parents=[options("quiet", "device", "precision", "download", "replacements",
                                                                "cache_dir", "json")],
                                   help="zero-shot hit@k and semantic similarity: DeViSE, ConSE, softmax",
                                   description="Embedding runs are evaluated as DeViSE; softmax runs as themselves "
                                               "and as ConSE.")
    zeroshot.add_argument("runs", nargs="+", help="run folders (embedding and/or softmax), or a pretrained "
                                                  "classifier's name (devise --list-pretrained)")
    zeroshot.add_argument("--target", required=True,
                          help="unseen (the classes the runs held out), seen (the classes they trained on), "
                               "cifar100, folder, tiny-imagenet or toy")
    zeroshot.add_argument("--target-root", help="where the target dataset is (folder, CIFAR-100 root, ...)")
    zeroshot.add_argument("--vocabulary", default="target,train",
                          help="comma list of target, train, words:N, file:PATH, wordnet:2hop|3hop|all "
                               "(WordNet nouns near the target's classes, less the training ones; default: target,train)")
    zeroshot.add_argument("--vectors", choices=LABEL_SPACES,
                          help="label space when no embedding run is given (default: glove-6b-50d)")
    zeroshot.add_argument("--prompts", help="with --vectors minilm, for a pretrained classifier named instead of a "
                                            "run: default, hypernym or a file of templates")
    zeroshot.add_argument("--image-size", type=int, help="the input size of a pretrained classifier named instead of "
                                                         "a run (default: its weights' own)")
    zeroshot.add_argument("--conse-top", type=int, default=10, help="ConSE's T (default: 10)")
    zeroshot.add_argument("--out", help="output folder (default: RUN/zeroshot-TARGET)")
    zeroshot.add_argument("--examples", type=int, default=6, help="random target images in examples.png (default: 6)")
    zeroshot.add_argument("--example-images", help="chosen target image indices for examples.png, e.g. 3,17,42")
    zeroshot.set_defaults(func=cmd_zeroshot)

    predict = commands.add_parser("predict", parents=[options("device", "precision", "replacements")],
                                  help="ranked labels with scores for image files")
    predict.add_argument("run", help="run folder, exported model folder, or a pretrained classifier's name "
                                     "(devise --list-pretrained)")
    predict.add_argument("images", nargs="+", help="image files (any size; greyscale and RGBA are fine)")
    predict.add_argument("--vocabulary", default="train",
                         help="comma list of train, words:N, file:PATH, wordnet:all (default: train); embedding or --conse runs")
    predict.add_argument("--top", type=int, default=5, help="labels per image (default: 5)")
    predict.add_argument("--conse", action="store_true", help="for a softmax run: rank the vocabulary through ConSE")
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    add_stock_space(predict)
    predict.set_defaults(func=cmd_predict)

    export = commands.add_parser("export", parents=[options("replacements")],
                                 help="a run's model as one portable folder: safetensors + config.json (+ ONNX)",
                                 description="Write RUN's model to --out as model.safetensors and config.json; "
                                             "load it with devise.load(OUT) anywhere, no run folder needed.")
    export.add_argument("run", help="run folder")
    export.add_argument("--out", required=True, help="folder to write the model into")
    export.add_argument("--onnx", action="store_true",
                        help="also write image_encoder.onnx: uint8 images (N x 3 x S x S, RGB) in, unit vectors out")
    export.set_defaults(func=cmd_export)

    serve = commands.add_parser("serve", parents=[options("device", "precision")],
                                help="a local web page (and JSON endpoint) to try models on your images",
                                description="Serve exported models or run folders: DeViSE for an embedding model, "
                                            "ConSE for a softmax one, side by side when both are given.")
    serve.add_argument("models", nargs="+", help="exported model folders or run folders")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    serve.add_argument("--labels", metavar="FILE", help="the page's default candidate labels, one a line "
                                                        "(default: the training labels and --words common nouns)")
    serve.add_argument("--words", type=int, default=1000,
                       help="common nouns of the label space added to the default labels (default: 1000)")
    serve.add_argument("--top", type=int, default=5, help="labels shown per model (default: 5)")
    serve.add_argument("--max-mb", type=float, default=10, help="largest image accepted, in MB (default: 10)")
    serve.set_defaults(func=cmd_serve)

    report = commands.add_parser("report", help="one self-contained HTML page about runs and zero-shot results")
    report.add_argument("runs", nargs="+", help="run folders; exported folders and pretrained models' names too")
    report.add_argument("--zeroshot", nargs="+", help="zero-shot output folders (default: RUN/zeroshot-* found)")
    report.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    report.add_argument("--title", default="devise report", help="the page's title")
    report.set_defaults(func=cmd_report)

    reproduce = commands.add_parser("reproduce", parents=[options("quiet", "device", "data_root", "cache_dir",
                                                                  "download", "json")],
                                    help="the whole experiment: train, evaluate, zero-shot, report")
    reproduce.add_argument("--preset", default="cpu", choices=list(presets()),
                           help="the settings of both stages, a file of src/devise/presets (default: cpu)")
    reproduce.add_argument("--target", default="unseen",
                           help="zero-shot target: unseen (held-out classes, default), cifar100, folder")
    reproduce.add_argument("--target-root", help="where the target dataset is")
    reproduce.add_argument("--out", default="runs/reproduce", help="output folder (default: runs/reproduce)")
    reproduce.add_argument("--budget", type=float, metavar="MINUTES",
                           help="finish within this many minutes: measure this host's speed first, then train "
                                "each epoch on the share of its images that fits")
    reproduce.set_defaults(func=cmd_reproduce)

    demo = commands.add_parser("demo", parents=[options("quiet", "device", "json")],
                               help="the whole pipeline on the generated toy set, in well under a minute")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.set_defaults(func=cmd_demo)

    vectors = commands.add_parser("vectors", help="word-vector tools")
    vector_commands = vectors.add_subparsers(dest="vectors_command", metavar="COMMAND", required=True)
    check = vector_commands.add_parser("check", parents=[options("quiet", "data_root", "cache_dir", "replacements")],
                                       help="which labels of a dataset have vectors, and from which words")
    check.add_argument("--data", default="tiny-imagenet", help=f"one of {', '.join(DATASETS)}")
    check.add_argument("--split", default="val", help="the split whose labels to check (default: val)")
    check.add_argument("--vectors", default="glove-6b-50d", choices=LABEL_SPACES, help="label space (default: glove-6b-50d)")
    check.add_argument("--vectors-path", help="vectors file for the file formats")
    check.add_argument("--rule", default=DEFAULT_RULE, choices=LABEL_RULES, help=f"synonym rule (default: {DEFAULT_RULE})")
    check.add_argument("--json", action="store_true", help="one JSON object per label")
    check.set_defaults(func=cmd_vectors_check)

    data = commands.add_parser("data", parents=[options("quiet", "data_root", "cache_dir", "download")],
                               help="load (and cache) a dataset and print what it holds")
    data.add_argument("--data", default="tiny-imagenet", help=f"one of {', '.join(DATASETS)}")
    data.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to load (default: train val)")
    data.add_argument("--image-size", type=int, help="resize to this many pixels (default: as stored)")
    data.add_argument("--clean", action="store_true", help="remove devise's cache (decoded datasets, features, "
                      "phrases; --cache-dir, else $DEVISE_CACHE or ~/.cache/devise), saying what and how much")
    data.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # torchrun's other processes train and stay silent: rank 0 reports
    configure(quiet=getattr(args, "quiet", False) or not is_main_process(), verbose=getattr(args, "verbose", False))
    quiet_third_parties()
    try:
        return args.func(args)
    except DeviseError as error:
        print(f"devise: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("devise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as error:  # the system refused (no space, read-only, gone) where devise did not say it first
        print(f"devise: error: {describe(error)}; the work could not go on", file=sys.stderr)
        return RunFailed.exit_code
