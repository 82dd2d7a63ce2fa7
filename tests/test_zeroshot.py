"""Zero-shot pieces on hand-built vectors, and the whole path on a held-out toy split."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import devise as devise_api
import devise.training.loop as training
from devise.config import TrainConfig
from devise.errors import DeviseError
from devise.evaluation.metrics import generalised_figures, ranking_metrics, semantic_similarity, similarity_control
from devise.labels.run_labels import RunLabels
from devise.labels.sources import keyed_vectors
from devise.labels.spaces import WordVectorSpace
from devise.labels.vocabulary import Vocabulary, build_vocabulary
from devise.model import checkpoint
from devise.model.inference import conse_vectors
from devise.training import runs
from devise.training.calibration import (
    area_under_seen_unseen_curve,
    best_harmonic_constant,
    calibration_gamma,
    harmonic_mean,
    seen_unseen_curve,
)

E = torch.eye(3)


def test_conse_is_the_probability_weighted_mean_of_the_top_t_label_vectors():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert torch.allclose(conse_vectors(logits, E, top=2), F.normalize(torch.tensor([[0.5, 0.3, 0.0]]), dim=1))
    assert torch.allclose(conse_vectors(logits, E, top=1), torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.allclose(conse_vectors(logits, E, top=10), F.normalize(torch.tensor([[0.5, 0.3, 0.2]]), dim=1))


def test_semantic_similarity_is_the_mean_cosine_to_the_top_predictions():
    true = torch.tensor([[1.0, 0.0]])
    top3 = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]])
    assert semantic_similarity(true, top3).item() == pytest.approx((1 + 0 + 0.6) / 3)


def test_similarity_control_averages_random_label_pairs():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    training_labels = torch.tensor([[1.0, 0.0]])
    # Half of the random pairs score 1, half 0.
    assert similarity_control(target, training_labels, pairs=20000) == pytest.approx(0.5, abs=0.02)
    assert similarity_control(training_labels, training_labels, pairs=100) == pytest.approx(1.0)


def test_ranking_metrics_on_a_hand_built_case():
    candidates = Vocabulary(["cat", "dog", "car"], torch.eye(3), "hand")
    true_labels = ["cat", "dog", "zebra"]
    labels = torch.tensor([0, 1, 2, 0])
    top = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2], [2, 0, 1]])
    truth = candidates.positions(true_labels)  # [0, 1, -1]: "zebra" is not a candidate
    result = ranking_metrics(top, candidates.vectors, truth, labels, torch.eye(3)[[0, 1, 0, 0]], ks=(1, 2, 3))
    assert result["hit@1"] == 0.25 and result["hit@2"] == 0.75 and result["hit@3"] == 0.75
    assert result["per_class_top1"] == pytest.approx((0.5 + 0 + 0) / 3)  # "zebra" is never a candidate
    assert harmonic_mean(0.5, 0.25) == pytest.approx(1 / 3) and harmonic_mean(0, 0) == 0



def test_calibrated_stacking_sweeps_from_all_seen_to_all_unseen_by_hand():
    # Classes 0, 1 are seen, 2, 3 unseen; one image each. margin = best seen score - best unseen;
    # gamma above an image's margin names it with its best unseen label.
    labels = torch.tensor([0, 1, 2, 3])
    seen_image = torch.tensor([True, True, False, False])
    margin = torch.tensor([0.3, -0.1, 0.2, 0.2])
    seen_right = torch.tensor([True, True, False, False])  # both seen images: best seen label is right
    unseen_right = torch.tensor([False, False, True, False])  # image 2's best unseen label is right
    gammas, S, U = seen_unseen_curve(margin, seen_right, unseen_right, labels, seen_image)
    # gamma: -inf -> both seen images right; past -0.1 image 1 flips; past 0.2 images 2, 3 (tied);
    # past 0.3 image 0.
    assert gammas.tolist() == pytest.approx([float("-inf"), -0.1, 0.2, 0.3])
    assert S.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert U.tolist() == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert area_under_seen_unseen_curve(S, U) == pytest.approx(0.5 * 0.5)
    # H is best (0.5) between 0.2 and 0.3: the constant is taken midway, where `margin < gamma`
    # names images 1, 2 and 3 unseen as the curve counts them.
    assert best_harmonic_constant(margin, seen_right, unseen_right, labels, seen_image) == pytest.approx((0.25, 0.5))
    # Naming a quarter of the seen images unseen takes the quarter quantile of their margins.
    assert calibration_gamma(torch.tensor([-0.1, 0.1, 0.3, 0.5, 0.7]), 0.25) == pytest.approx(0.1)



def test_generalised_zero_shot_calibrates_on_seen_images_it_does_not_score():
    # Labels 0, 1 seen, 2, 3 unseen. Seen images 0 and 2 (every other one) choose the constant;
    # images 1, 3, 4, 5 are scored. margin = best seen score - best unseen score.
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.0],   # calibration, margin 0.4
                           [0.8, 0.2, 0.7, 0.0],   # right among seen labels, margin 0.1
                           [0.1, 0.6, 0.0, 0.4],   # calibration, margin 0.2
                           [0.1, 0.9, 0.3, 0.2],   # right among seen labels, margin 0.6
                           [0.7, 0.1, 0.5, 0.2],   # unseen: right among unseen labels, margin 0.2
                           [0.2, 0.6, 0.1, 0.3]])  # unseen: right among unseen labels, margin 0.3
    figures = generalised_figures(scores, labels, torch.tensor([True, True, False, False]))
    assert (figures["gzsl_seen"], figures["gzsl_unseen"], figures["gzsl_harmonic"]) == (1.0, 0.0, 0.0)
    # Half the labels are unseen: the constant is the median of the calibration margins, 0.3;
    # image 1 (0.1) and image 4 (0.2) are then named unseen, image 5 (0.3) not.
    assert figures["gzsl_gamma"] == pytest.approx(0.3)
    assert (figures["gzsl_cal_seen"], figures["gzsl_cal_unseen"]) == (0.5, 0.5)
    assert figures["gzsl_cal_harmonic"] == pytest.approx(0.5)
    # The curve (U, S): (0, 1) (0, .5) (.5, .5) (1, .5) (1, 0): area 0.5, best H 2/3 at (1, .5).
    assert figures["gzsl_ausuc"] == pytest.approx(0.5)
    assert figures["gzsl_best_harmonic"] == pytest.approx(2 / 3)
    # A constant the model brings (a class split's) is used as given: 0.35 names images 1, 4, 5 unseen.
    brought = generalised_figures(scores, labels, torch.tensor([True, True, False, False]), gamma=0.35)
    assert brought["gzsl_gamma"] == 0.35 and (brought["gzsl_cal_seen"], brought["gzsl_cal_unseen"]) == (0.5, 1.0)


def small_space():
    words = ["the", "cat", "dog", "car", "big", "x1", "truck"]
    return WordVectorSpace(keyed_vectors(words, torch.randn(len(words), 4, generator=torch.Generator().manual_seed(0)).numpy()), "tiny")


def test_vocabulary_from_label_sets_frequent_words_and_a_file(tmp_path):
    phrases = tmp_path / "words.txt"
    phrases.write_text("# my labels\nbig truck\ncat\n")
    vocabulary = build_vocabulary(RunLabels(small_space()), {"target": ["cat", "dog"], "train": ["dog", "car"]},
                                  f"target,train,words:5,file:{phrases}")
    assert vocabulary.labels == ["cat", "dog", "car", "the", "big", "big truck"]
    assert torch.allclose(vocabulary.vectors.norm(dim=1), torch.ones(6))
    with pytest.raises(DeviseError, match="unknown vocabulary part"):
        build_vocabulary(RunLabels(small_space()), {"target": ["cat"]}, "target,everything")


SMALL = dict(data="toy", image_size=32, body="cnn", width=16, hidden=64, dropout=0.1, batch_size=32,
             optimizer="adam", lr=3e-3, crop_padding=2, bf16=False, unseen=8, unseen_seed=3)


@pytest.fixture(scope="module")
def held_out_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zsl")
    softmax = training.train(TrainConfig(**SMALL, epochs=4, out=str(folder / "softmax")), progress=False)
    devise = training.train(TrainConfig(**SMALL, head="embedding", loss="rank", epochs=3, init=str(softmax.folder),
                                        out=str(folder / "devise")), progress=False)
    return softmax, devise


def test_the_held_out_split_never_lets_an_unseen_class_into_training(held_out_runs):
    softmax, devise = held_out_runs
    unseen = json.loads((softmax.folder / "unseen.json").read_text())
    assert len(unseen["names"]) == 8
    assert not set(unseen["names"]) & set(softmax.class_names)
    assert len(softmax.class_names) == 32 and devise.class_names == softmax.class_names
    train_set = runs.run_split(softmax.config, softmax.folder, "train", progress=False)
    val_set = runs.run_split(softmax.config, softmax.folder, progress=False)
    assert train_set.num_classes == 32 and int(train_set.labels.max()) == 31
    assert not set(unseen["ids"]) & set(train_set.class_ids) and not set(unseen["ids"]) & set(val_set.class_ids)


def test_zeroshot_command_on_the_unseen_toy_classes(held_out_runs, tmp_path):
    softmax, devise = held_out_runs
    result = subprocess.run([sys.executable, "-m", "devise", "zeroshot", str(devise.folder), str(softmax.folder),
                             "--target", "unseen", "--out", str(tmp_path / "zs"), "--example-images", "0,5,7", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert (tmp_path / "zs" / "similarity.png").stat().st_size > 1000
    assert results["examples"]["index"] == [0, 5, 7] and (tmp_path / "zs" / "examples.png").is_file()
    models = results["models"]
    assert {m["kind"] for m in models.values()} == {"DeViSE", "ConSE", "softmax"}
    softmax_entry = next(m for m in models.values() if m["kind"] == "softmax")
    assert softmax_entry["hit@20"] == 0.0 and softmax_entry["gzsl_unseen"] == 0.0  # it cannot name unseen classes
    for entry in models.values():
        assert 0 <= entry["hit@1"] <= entry["hit@5"] <= 1
        assert entry["lift"] == pytest.approx(entry["similarity"] - results["control_similarity"])
    devise_entry = next(m for m in models.values() if m["kind"] == "DeViSE")
    assert devise_entry["lift"] > softmax_entry["lift"]


def test_a_frozen_body_devise_run_chooses_its_calibration_constant_on_class_splits(held_out_runs, tmp_path):
    from devise.evaluation.zeroshot import ZeroShotRequest, run_zero_shot

    softmax, unfrozen = held_out_runs
    frozen = training.train(TrainConfig(**SMALL, head="embedding", epochs=2, freeze_epochs=2, init=str(softmax.folder),
                                        out=str(tmp_path / "frozen")), progress=False)
    calibration = runs.read_calibration(frozen.folder)
    unseen = json.loads((softmax.folder / "unseen.json").read_text())["ids"]
    assert calibration["method"] == "class split" and len(calibration["splits"]) == 3
    for split in calibration["splits"]:  # pseudo-unseen classes are seen classes, as many as the unseen
        assert len(split["pseudo_unseen"]) == 8 and set(split["pseudo_unseen"]) <= set(frozen.class_ids)
        assert not set(split["pseudo_unseen"]) & set(unseen) and 0 <= split["harmonic"] <= 1
    assert calibration["gamma"] == pytest.approx(sum(s["gamma"] for s in calibration["splits"]) / 3)
    assert runs.read_calibration(unfrozen.folder) is None  # its body trained: no head alone can be redone
    results = run_zero_shot(ZeroShotRequest([frozen.folder, unfrozen.folder], "unseen", vocabulary="target", out=tmp_path / "zs",
                            examples=0, progress=False))
    by_folder = {name.split("(")[-1].rstrip(")"): m for name, m in results["models"].items()}
    assert by_folder["frozen"]["calibration"] == "class split"
    assert by_folder["frozen"]["gzsl_gamma"] == pytest.approx(calibration["gamma"])
    assert by_folder["devise"]["calibration"] == "seen share"


def test_conse_chooses_its_calibration_constant_on_class_splits_in_the_space_compared_in(held_out_runs, tmp_path):
    from devise.evaluation.zeroshot import ZeroShotRequest, comparison_space, run_zero_shot
    from devise.training.calibration import class_split_constant

    softmax, devise = held_out_runs
    results = run_zero_shot(ZeroShotRequest([devise.folder, softmax.folder], "unseen", vocabulary="target", out=tmp_path / "zs",
                            examples=0, progress=False))
    conse = next(m for m in results["models"].values() if m["kind"] == "ConSE")
    assert conse["calibration"] == "class split"
    # The same constant as the softmax run's last layer redone on three splits, read in the DeViSE run's space.
    train_set = runs.run_split(softmax.config, softmax.folder, "train", progress=False)
    val_set = runs.run_split(softmax.config, softmax.folder, progress=False)
    models = [devise_api.load(devise.folder, device="cpu"), devise_api.load(softmax.folder, device="cpu")]
    space = comparison_space(models)
    chosen = class_split_constant(softmax.config, lambda data: models[1].body_outputs(data, progress=False), train_set,
                                  val_set, space.embed(train_set.class_names, train_set.class_ids), progress=False)
    assert len(chosen["splits"]) == 3 and conse["gzsl_gamma"] == pytest.approx(chosen["gamma"])
    assert runs.read_calibration(softmax.folder) is None  # it belongs to the space, not to the softmax run


def test_class_splits_train_on_the_images_the_run_trained_on(held_out_runs, monkeypatch):
    from devise.training import calibration

    softmax, _ = held_out_runs
    train_set = runs.run_split(softmax.config, softmax.folder, "train", progress=False)
    val_set = runs.run_split(softmax.config, softmax.folder, progress=False)
    model, featured = devise_api.load(softmax.folder, device="cpu"), []

    def features_of(data):
        featured.append(len(data))
        return model.body_outputs(data, progress=False)

    trial = replace(softmax.config, train_limit=100)  # trained with --train-limit 100
    calibration.class_split_constant(trial, features_of, train_set, val_set, torch.randn(len(softmax.class_names), 8),
                                     progress=False)
    assert featured == [100, len(val_set)]  # its first 100 training images; the validation images, half then used


def test_zeroshot_on_an_image_folder_target(held_out_runs, tmp_path):
    from PIL import Image

    from devise.data import load_dataset
    from devise.evaluation.zeroshot import ZeroShotRequest, run_zero_shot

    softmax, devise = held_out_runs
    unseen = json.loads((softmax.folder / "unseen.json").read_text())["names"][:3]
    toy = load_dataset("toy", split="test")
    for name in unseen:
        (tmp_path / "target" / name).mkdir(parents=True)
        index = toy.class_names.index(name)
        for i, image in enumerate(toy.images[toy.labels == index][:5]):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "target" / name / f"{i}.png")
    results = run_zero_shot(ZeroShotRequest([devise.folder, softmax.folder], "folder", str(tmp_path / "target"),
                            vocabulary="target,train,words:200", out=tmp_path / "zs", examples=2, progress=False))
    assert results["images"] == 15 and results["target_classes"] == 3
    entry = next(m for m in results["models"].values() if m["kind"] == "DeViSE")
    assert entry["vocabulary_size"] > 3 + 32 and 0 <= entry["vocabulary_hit@5"] <= entry["hit@5"]
    assert (tmp_path / "zs" / "examples.png").is_file()


def test_zeroshot_on_a_cifar100_target(held_out_runs, tmp_path):
    from conftest import write_cifar100

    from devise.evaluation.zeroshot import ZeroShotRequest, run_zero_shot

    softmax, devise = held_out_runs
    write_cifar100(tmp_path, {"test": 40}, names=["aquarium_fish", "maple_tree", "lawn_mower", "tiger", "shark"])
    results = run_zero_shot(ZeroShotRequest([devise.folder, softmax.folder], "cifar100", str(tmp_path), out=tmp_path / "zs",
                            examples=0, progress=False))
    assert results["images"] == 40 and results["target_classes"] == 5
    assert {m["kind"] for m in results["models"].values()} == {"DeViSE", "ConSE", "softmax"}


def test_a_target_label_without_a_vector_fails_before_any_image_is_decoded_or_run(held_out_runs, tmp_path,
                                                                                monkeypatch):
    from conftest import write_cifar100
    from PIL import Image

    import devise.data.folder as folder
    import devise.evaluation.zeroshot as zeroshot

    softmax, devise = held_out_runs
    for name in ("qqvorp", "green circle"):
        (tmp_path / "target" / name).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "target" / name / "0.png")
    monkeypatch.setattr(folder, "decode_many", lambda *args, **kwargs: pytest.fail("an image was decoded"))
    monkeypatch.setattr(zeroshot.DeviseModel, "dataset_outputs", lambda *args, **kwargs: pytest.fail("a model ran"))
    with pytest.raises(DeviseError) as failed:
        zeroshot.run_zero_shot(zeroshot.ZeroShotRequest([devise.folder, softmax.folder], "folder", str(tmp_path / "target"),
                               out=tmp_path / "zs", progress=False))
    assert "no vector in" in str(failed.value) and "'qqvorp'" in str(failed.value)
    assert "'green circle'" not in str(failed.value) and "--replacements FILE" in str(failed.value)
    # A target whose names come with its images (CIFAR-100's meta file): refused before the models run.
    write_cifar100(tmp_path / "cifar", {"test": 10}, names=["tiger", "qqvorp"])
    with pytest.raises(DeviseError, match="no vector in .* 'qqvorp'; map them to other words with --replacements"):
        zeroshot.run_zero_shot(zeroshot.ZeroShotRequest([devise.folder], "cifar100", str(tmp_path / "cifar"), out=tmp_path / "zs",
                               progress=False))
    assert not (tmp_path / "zs" / "zeroshot.json").exists()


def test_a_run_trained_with_relative_paths_is_used_from_any_directory(tmp_path):
    from PIL import Image

    from devise.data import load_dataset

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    toy = load_dataset("toy", split="train", image_size=16)
    for name in toy.class_names[:6]:
        (work / "data" / name).mkdir(parents=True)
        for i, image in enumerate(toy.images[toy.labels == toy.class_names.index(name)][:10]):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(work / "data" / name / f"{i}.png")
    (work / "replacements.txt").write_text("red square\tcrimson square\n")
    devise = [sys.executable, "-m", "devise"]
    train = [*devise, "train", "--data", "folder", "--data-root", "data", "--replacements", "replacements.txt",
             "--cache-dir", "cache", "--unseen", "2", "--image-size", "16", "--crop-padding", "2", "--body", "cnn",
             "--width", "8", "--hidden", "16", "--batch-size", "16", "--epochs", "1", "--out", "run", "--quiet"]
    trained = subprocess.run(train, cwd=work, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    saved = checkpoint.load_config(work / "run")
    assert saved.data_root == str((work / "data").resolve()) and saved.cache_dir == str((work / "cache").resolve())
    assert saved.replacements == str((work / "replacements.txt").resolve()) and saved.out == "run"
    for command in (["zeroshot", str(work / "run"), "--target", "unseen", "--out", "zs", "--example-images", "0"],
                    ["evaluate", str(work / "run")],
                    ["train", "--resume", "--out", str(work / "run"), "--epochs", "2"]):
        done = subprocess.run([*devise, *command, "--quiet"], cwd=elsewhere, capture_output=True, text=True)
        assert done.returncode == 0, (command[0], done.stderr)
    assert json.loads((elsewhere / "zs" / "zeroshot.json").read_text())["target_classes"] == 2
    assert len(runs.read_metrics(work / "run")) == 2


def test_a_run_folder_written_with_relative_paths_still_resumes_from_where_it_was_trained(tmp_path, monkeypatch):
    from devise.config import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data="toy", vectors="glove-text", vectors_path="vectors.txt", replacements="~/r.txt",
                         out="run")
    (tmp_path / "run").mkdir()
    runs.save_config(tmp_path / "run", config)  # as devise wrote it before paths were made absolute
    (tmp_path / "run" / runs.CHECKPOINT).write_bytes(b"")
    absolute = with_absolute_paths(config)
    assert absolute.vectors_path == str(tmp_path.resolve() / "vectors.txt") and absolute.out == "run"
    assert absolute.replacements == str(Path("~/r.txt").expanduser().resolve()) and absolute.data_root is None
    training.check_folder(tmp_path / "run", absolute, resume=True)
    with pytest.raises(DeviseError, match="--resume cannot change --vectors-path"):
        training.check_folder(tmp_path / "run", with_absolute_paths(TrainConfig(**{**config.to_dict(),
                                                                                   "vectors_path": "other.txt"})),
                              resume=True)
    assert with_absolute_paths(TrainConfig(vectors="minilm", prompts="default")).prompts == "default"
    assert with_absolute_paths(TrainConfig(vectors="minilm", prompts="hypernym")).prompts == "hypernym"
    prompts = with_absolute_paths(TrainConfig(vectors="minilm", prompts="p.txt")).prompts
    assert prompts == str(tmp_path.resolve() / "p.txt")


# ---------------------------------------------------------------------------------------------
# A run's own label rules, all the way to zero-shot

# Toy classes under other names: synonym lists (where "first" and "mean" differ) and one word
# GloVe does not know, which a replacements file maps to words it does.
RENAMED = {"red square": "red square, crimson block", "blue circle": "blue circle, azure disc",
           "green triangle": "green triangle, emerald wedge", "yellow cross": "yellow cross, golden plus",
           "purple ring": "zzblorp", "orange square": "orange square, amber tile",
           "black circle": "black circle, dark disc", "white triangle": "white triangle, pale wedge",
           "red ring": "red ring, scarlet hoop", "blue cross": "blue cross, navy plus"}
REPLACEMENTS = "zzblorp\tpurple ring\n"


def write_renamed_toy(root):
    from PIL import Image

    from devise.data import load_dataset

    for split, per_class in (("train", 30), ("val", 10)):
        toy = load_dataset("toy", split=split)
        for old, new in RENAMED.items():
            folder = root / split / new
            folder.mkdir(parents=True)
            for i, image in enumerate(toy.images[toy.labels == toy.class_names.index(old)][:per_class]):
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def renamed_runs(tmp_path_factory):
    """Softmax and DeViSE runs on the renamed toy classes, 3 held out, read with rule "first" and
    the replacements file."""
    folder = tmp_path_factory.mktemp("renamed")
    root = write_renamed_toy(folder / "data")
    replacements = folder / "replacements.txt"
    replacements.write_text(REPLACEMENTS)
    common = dict(SMALL, data="folder", data_root=str(root), unseen=3, unseen_seed=1, label_rule="first",
                  replacements=str(replacements))
    softmax = training.train(TrainConfig(**common, epochs=4, out=str(folder / "softmax")), progress=False)
    devise = training.train(TrainConfig(**common, head="embedding", loss="rank", epochs=3, init=str(softmax.folder),
                                        out=str(folder / "devise")), progress=False)
    return softmax, devise, replacements


def test_zero_shot_reads_labels_with_the_runs_own_rule_and_replacements(renamed_runs, tmp_path):
    from devise.data import load_dataset
    from devise.evaluation.zeroshot import ZeroShotRequest, run_zero_shot
    from devise.labels.run_labels import read_replacements
    from devise.labels.spaces import load_label_space

    softmax, devise, replacements = renamed_runs
    results = run_zero_shot(ZeroShotRequest([devise.folder, softmax.folder], "unseen", vocabulary="target", out=tmp_path / "zs",
                            examples=0, progress=False, device="cpu"))
    # By hand: the held-out classes' images, ranked among their names read with rule "first".
    unseen = json.loads((devise.folder / "unseen.json").read_text())["names"]
    everything = load_dataset("folder", devise.config.data_root, "val", image_size=32, progress=False)
    keep = torch.tensor([everything.class_names[y] in unseen for y in everything.labels.tolist()])
    names = [everything.class_names[y] for y in everything.labels[keep].tolist()]
    glove = load_label_space()
    first = glove.embed(unseen, "first", read_replacements(replacements))
    assert not torch.allclose(first, glove.embed(unseen, "mean", read_replacements(replacements))), \
        "the rule matters for these labels"
    with torch.no_grad():
        predicted = F.normalize(devise.model.eval()(devise.preprocess.prepare(everything.images[keep])), dim=1)
    cosines = predicted @ first.T
    truth = torch.tensor([unseen.index(n) for n in names])
    top = cosines.topk(3, dim=1).indices
    entry = next(m for m in results["models"].values() if m["kind"] == "DeViSE")
    assert entry["hit@1"] == pytest.approx(float((top[:, 0] == truth).float().mean()))
    assert entry["hit@2"] == pytest.approx(float((top[:, :2] == truth[:, None]).any(dim=1).float().mean()))
    assert entry["similarity"] == pytest.approx(float((first[top] * first[truth][:, None]).sum(dim=2).mean()), abs=1e-5)


def test_a_target_class_without_a_vector_names_itself_and_the_flag_and_a_replacements_file_fixes_it(renamed_runs, tmp_path):
    from PIL import Image

    from devise.data import load_dataset

    softmax, devise, replacements = renamed_runs
    toy = load_dataset("toy", split="test")
    for name, source in (("qqvorp", "white ring"), ("green circle", "green circle")):
        (tmp_path / "target" / name).mkdir(parents=True)
        for i, image in enumerate(toy.images[toy.labels == toy.class_names.index(source)][:4]):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "target" / name / f"{i}.png")
    command = [sys.executable, "-m", "devise", "zeroshot", str(devise.folder), "--target", "folder",
               "--target-root", str(tmp_path / "target"), "--out", str(tmp_path / "zs"), "--quiet"]
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert "'qqvorp'" in failed.stderr and "--replacements" in failed.stderr
    fix = tmp_path / "fix.txt"
    fix.write_text("qqvorp\twhite ring\n")
    fixed = subprocess.run(command + ["--replacements", str(fix)], capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads((tmp_path / "zs" / "zeroshot.json").read_text())["target_classes"] == 2
    # The same for `devise predict` with the word in its vocabulary.
    words = tmp_path / "words.txt"
    words.write_text("qqvorp\ngreen circle\n")
    predict = [sys.executable, "-m", "devise", "predict", str(devise.folder), str(tmp_path / "target" / "qqvorp" / "0.png"),
               "--vocabulary", f"train,file:{words}", "--json"]
    failed = subprocess.run(predict, capture_output=True, text=True)
    assert failed.returncode == 2 and "'qqvorp'" in failed.stderr and "--replacements" in failed.stderr
    fixed = subprocess.run(predict + ["--replacements", str(fix)], capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert len(json.loads(fixed.stdout)["labels"]) == 5
