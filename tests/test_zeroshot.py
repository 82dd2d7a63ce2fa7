"""Zero-shot pieces on hand-built vectors, and the whole path on a held-out toy split."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import devise.train as training
from devise.config import TrainConfig
from devise.errors import DeviseError
from devise.vectors import WordVectorSpace, keyed_vectors
from devise.zeroshot import (Vocabulary, build_vocabulary, conse_vectors, harmonic_mean, ranking_metrics,
                             semantic_similarity, similarity_control)

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
    result = ranking_metrics(top, candidates, true_labels, labels, torch.eye(3)[[0, 1, 0, 0]], ks=(1, 2, 3))
    assert result["hit@1"] == 0.25 and result["hit@2"] == 0.75 and result["hit@3"] == 0.75
    assert result["per_class_top1"] == pytest.approx((0.5 + 0 + 0) / 3)  # "zebra" is never a candidate
    assert harmonic_mean(0.5, 0.25) == pytest.approx(1 / 3) and harmonic_mean(0, 0) == 0


def small_space():
    words = ["the", "cat", "dog", "car", "big", "x1", "truck"]
    return WordVectorSpace(keyed_vectors(words, torch.randn(len(words), 4, generator=torch.Generator().manual_seed(0)).numpy()), "tiny")


def test_vocabulary_from_label_sets_frequent_words_and_a_file(tmp_path):
    phrases = tmp_path / "words.txt"
    phrases.write_text("# my labels\nbig truck\ncat\n")
    vocabulary = build_vocabulary(small_space(), {"target": ["cat", "dog"], "train": ["dog", "car"]},
                                  f"target,train,words:5,file:{phrases}")
    assert vocabulary.labels == ["cat", "dog", "car", "the", "big", "big truck"]
    assert torch.allclose(vocabulary.vectors.norm(dim=1), torch.ones(6))
    with pytest.raises(DeviseError, match="unknown vocabulary part"):
        build_vocabulary(small_space(), {"target": ["cat"]}, "target,everything")


SMALL = dict(data="toy", image_size=32, model="cnn", width=16, hidden=64, dropout=0.1, batch_size=32,
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
    train_set, _, val_set = training.load_data(softmax.config, progress=False)
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


def test_zeroshot_on_an_image_folder_target(held_out_runs, tmp_path):
    from PIL import Image

    from devise.data import load_dataset
    from devise.zeroshot import run_zero_shot

    softmax, devise = held_out_runs
    unseen = json.loads((softmax.folder / "unseen.json").read_text())["names"][:3]
    toy = load_dataset("toy", split="test")
    for name in unseen:
        (tmp_path / "target" / name).mkdir(parents=True)
        index = toy.class_names.index(name)
        for i, image in enumerate(toy.images[toy.labels == index][:5]):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "target" / name / f"{i}.png")
    results = run_zero_shot([devise.folder, softmax.folder], "folder", str(tmp_path / "target"),
                            vocabulary="target,train,words:200", out=tmp_path / "zs", examples=2, progress=False)
    assert results["images"] == 15 and results["target_classes"] == 3
    entry = next(m for m in results["models"].values() if m["kind"] == "DeViSE")
    assert entry["vocabulary_size"] > 3 + 32 and 0 <= entry["vocabulary_hit@5"] <= entry["hit@5"]
    assert (tmp_path / "zs" / "examples.png").is_file()


def test_zeroshot_on_a_cifar100_target(held_out_runs, tmp_path):
    from conftest import write_cifar100
    from devise.zeroshot import run_zero_shot

    softmax, devise = held_out_runs
    write_cifar100(tmp_path, {"test": 40}, names=["aquarium_fish", "maple_tree", "lawn_mower", "tiger", "shark"])
    results = run_zero_shot([devise.folder, softmax.folder], "cifar100", str(tmp_path), out=tmp_path / "zs",
                            examples=0, progress=False)
    assert results["images"] == 40 and results["target_classes"] == 5
    assert {m["kind"] for m in results["models"].values()} == {"DeViSE", "ConSE", "softmax"}
