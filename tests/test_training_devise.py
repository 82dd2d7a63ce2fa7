"""DeViSE on the toy set: the embedding head learns, warm-starts from softmax, and evaluates."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import toy_settings

import devise
import devise.training.loop as training
from devise.errors import DeviseError
from devise.evaluation.evaluate import evaluate_run
from devise.evaluation.zeroshot import comparison_space
from devise.model import checkpoint
from devise.training.objectives import SoftmaxTeacher


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "softmax"
    return training.train(toy_settings(epochs=5, out=str(folder)), progress=False)


def test_the_embedding_head_learns_the_toy_set_from_a_warm_start(softmax_run, tmp_path):
    config = toy_settings(head="embedding", loss="rank", epochs=3, init=str(softmax_run.folder),
                         freeze_epochs=1, out=str(tmp_path / "devise"))
    run = training.train(config, progress=False)
    result = evaluate_run(run.folder, progress=False)
    assert result["hit@1"] > 10 * result["chance"]["hit@1"], result
    assert result["hit@5"] >= result["hit@1"]
    assert json.loads((run.folder / "metrics.json").read_text())["head"] == "embedding"
    outputs = run.model(torch.zeros(2, 3, 32, 32))
    assert torch.allclose(outputs.norm(dim=1), torch.ones(2), atol=1e-4), "embedding outputs are unit vectors"


def test_a_centred_run_reads_every_label_less_the_mean_of_its_training_labels(softmax_run, tmp_path):
    from devise.labels.run_labels import label_space_for
    from devise.model.export import export

    config = toy_settings(head="embedding", epochs=1, init=str(softmax_run.folder), freeze_epochs=1,
                         centre_labels=True, out=str(tmp_path / "centred"))
    training.train(config, progress=False)
    run = checkpoint.load_run(tmp_path / "centred")
    plain = label_space_for(run.config)  # the label space without the run's centre
    raw = plain.embed(run.class_names)
    assert torch.allclose(run.label_centre, raw.mean(dim=0))
    assert torch.allclose(run.label_vectors, F.normalize(raw - raw.mean(dim=0), dim=1))
    off_diagonal = ~torch.eye(len(raw), dtype=torch.bool)
    assert (run.label_vectors @ run.label_vectors.T)[off_diagonal].mean() < (raw @ raw.T)[off_diagonal].mean(), \
        "with the shared direction off, labels sit further apart"
    new = ["tiger", "fire truck"]
    expected = F.normalize(plain.embed(new) - run.label_centre, dim=1)
    assert torch.allclose(run.label_space().embed(new), expected)
    assert run.label_space().name == "glove-6b-50d+centred"
    model = devise.load(export(run.folder, tmp_path / "model"), device="cpu")
    assert torch.allclose(model.encode_text(new), expected), "an exported model reads labels as its run does"


def test_warm_start_copies_the_body_and_freezing_keeps_it(softmax_run, tmp_path):
    config = toy_settings(head="embedding", epochs=1, init=str(softmax_run.folder), freeze_epochs=1,
                         out=str(tmp_path / "frozen"))
    run = training.train(config, progress=False)
    before = softmax_run.model.body.state_dict()
    after = run.model.body.state_dict()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name


def test_a_head_on_a_frozen_body_still_trains_with_the_dropout_before_it(softmax_run, tmp_path):
    config = toy_settings(head="embedding", epochs=1, init=str(softmax_run.folder), freeze_epochs=1)
    plain = training.train(replace(config, dropout=0.0, out=str(tmp_path / "plain")), progress=False)
    dropped = training.train(replace(config, dropout=0.5, out=str(tmp_path / "dropped")), progress=False)
    assert not torch.allclose(plain.model.head.project.weight, dropped.model.head.project.weight)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.body.state_dict().values(),
                                                 dropped.model.body.state_dict().values())), "the body stays frozen"


def test_a_softmax_teacher_mixes_its_probabilities_into_the_targets():
    torch.manual_seed(0)
    model, images, labels = torch.nn.Linear(6, 4), torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    probabilities = model(images).softmax(dim=1)
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    assert torch.equal(SoftmaxTeacher(model, 0.0, bf16=False).targets(images, labels), one_hot)
    assert torch.allclose(SoftmaxTeacher(model, 1.0, bf16=False).targets(images, labels), probabilities)
    half = SoftmaxTeacher(model, 0.5, bf16=False).targets(images, labels)
    assert torch.allclose(half, (one_hot + probabilities) / 2)
    assert torch.allclose(half.sum(dim=1), torch.ones(5))
    # A temperature of 2 softens the teacher: the same ranking, less mass on its first choice.
    soft = SoftmaxTeacher(model, 1.0, bf16=False, temperature=2.0).targets(images, labels)
    assert torch.allclose(soft, (model(images) / 2).softmax(dim=1))
    assert torch.equal(soft.argsort(dim=1), probabilities.argsort(dim=1))
    assert (soft.max(dim=1).values < probabilities.max(dim=1).values).all()


def test_distillation_learns_from_the_init_run_and_needs_a_softmax_one(softmax_run, tmp_path):
    config = toy_settings(head="embedding", loss="crossentropy", epochs=2, init=str(softmax_run.folder),
                         freeze_epochs=1, distill=0.5, out=str(tmp_path / "taught"))
    run = training.train(config, progress=False)
    assert evaluate_run(run.folder, progress=False)["hit@5"] > 0.5
    # While the body is frozen the teacher's targets come from the shared features, and are the same.
    teacher, images, labels = SoftmaxTeacher(softmax_run.model, 0.5, bf16=False), torch.randn(4, 3, 32, 32), torch.arange(4)
    with torch.no_grad():
        features = softmax_run.model.body(images)
    assert torch.allclose(teacher.targets(features, labels, from_features=True), teacher.targets(images, labels))
    with pytest.raises(DeviseError, match="softmax run over the same training classes"):
        training.train(toy_settings(head="embedding", loss="crossentropy", epochs=1, init=str(run.folder),
                                   distill=0.5, out=str(tmp_path / "from-devise")), progress=False)
    with pytest.raises(DeviseError, match="--distill needs"):
        training.train(toy_settings(head="embedding", loss="hinge", init=str(softmax_run.folder),
                                   distill=0.5, out=str(tmp_path / "hinge")), progress=False)
    with pytest.raises(DeviseError, match="--distill-temperature must be positive"):
        training.train(replace(config, distill_temperature=0.0, out=str(tmp_path / "frozen-teacher")), progress=False)


@pytest.mark.parametrize("loss", ["cosine", "hinge", "rank", "crossentropy"])
def test_each_loss_learns_the_toy_set_from_scratch(tmp_path, loss):
    run = training.train(toy_settings(head="embedding", loss=loss, epochs=3, out=str(tmp_path / loss)),
                         progress=False)
    assert run.label_vectors.shape == (40, 50)
    assert evaluate_run(run.folder, progress=False)["hit@1"] > 5 / 40, "well above chance (1 in 40)"


def test_the_random_vector_control_trains_towards_random_vectors_not_glove(softmax_run, tmp_path):
    config = toy_settings(head="embedding", loss="rank", epochs=2, init=str(softmax_run.folder),
                         freeze_epochs=1)
    glove = training.train(replace(config, out=str(tmp_path / "glove")), progress=False)
    control = training.train(replace(config, random_vectors=True, out=str(tmp_path / "random")), progress=False)
    # Random unit vectors in 50 dimensions are nearly orthogonal; GloVe's colour-shape labels are not.
    off_diagonal = ~torch.eye(40, dtype=torch.bool)
    glove_cosines = glove.label_vectors @ glove.label_vectors.T
    random_cosines = control.label_vectors @ control.label_vectors.T
    assert glove_cosines[off_diagonal].mean() > 0.3 > random_cosines[off_diagonal].abs().mean()
    # Both learn the flat 40-way lookup from the same warm start: the labels' meaning is not needed for it.
    assert evaluate_run(control.folder, progress=False)["hit@1"] > 0.5
    # Zero-shot reads the control's labels in its own random space, not in GloVe.
    space = comparison_space([devise.load(control.folder, device="cpu")])
    assert space.name == "random" and torch.equal(space.embed(control.class_names), control.label_vectors)


def test_a_warm_start_inherits_the_body_shape_including_the_pooled_stem(tmp_path):
    softmax = toy_settings(**dict(body="resnet9", image_size=64, width=8), stem_pool=True, epochs=1,
                          out=str(tmp_path / "softmax"))
    training.train(softmax, progress=False)
    devise = toy_settings(**dict(image_size=64), head="embedding", epochs=1, init=softmax.out,
                         out=str(tmp_path / "devise"))
    run = training.train(devise, progress=False)
    assert (run.config.body, run.config.width, run.config.stem_pool) == ("resnet9", 8, True)
    # The pooled stem halves the first feature map: a 64 px image costs what 32 px costs without it.
    stem = run.model.body[0][0]
    assert stem(torch.zeros(1, 3, 64, 64)).shape[-1] == 32


def test_warm_start_from_a_missing_run_is_an_error(tmp_path):
    config = toy_settings(head="embedding", epochs=1, init=str(tmp_path / "nope"), out=str(tmp_path / "r"))
    with pytest.raises(DeviseError, match="no such run folder"):
        training.train(config, progress=False)


def test_evaluate_command_writes_metrics_and_a_hit_at_k_plot(softmax_run, tmp_path):
    plot = tmp_path / "hitk.png"
    result = subprocess.run([sys.executable, "-m", "devise", "evaluate", str(softmax_run.folder), "--plot", str(plot),
                             "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "hit@1=" in result.stdout and "hit@20=" in result.stdout
    assert plot.stat().st_size > 1000


def test_vectors_check_prints_the_rule_used_for_each_label():
    result = subprocess.run([sys.executable, "-m", "devise", "vectors", "check", "--data", "toy", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "'red square' -> red square" in result.stdout
    assert "40/40 labels have vectors in glove-6b-50d (rule: mean)" in result.stderr
