"""Zero-shot on held-out classes and on other datasets: DeViSE, ConSE and softmax side by side."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import toy_settings

import devise.training.loop as training
from devise.cli import main
from devise.errors import DeviseError
from devise.training import runs


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
    printed = result.stdout.splitlines()  # a short table, a line per model, not every figure on one line
    assert printed[1].split()[:4] == ["model", "method", "hit@1", "hit@5"] and printed[1].endswith("regime")
    assert [line.split("  ")[0] for line in printed[2:2 + len(models)]] == list(models)
    assert max(len(re.findall(r"\d\.\d{3}", line)) for line in printed) <= 8


def test_zeroshot_prints_its_results_as_json_when_asked(held_out_runs, tmp_path, capsys):
    _, devise = held_out_runs
    assert main(["zeroshot", str(devise.folder), "--target", "unseen", "--out", str(tmp_path / "zs"), "--quiet",
                 "--json"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1
    written = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert json.loads(printed[0]) == {**written, "folder": str(tmp_path / "zs")}


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
    common = dict(data="folder", data_root=str(root), unseen=3, unseen_seed=1, label_rule="first",
                  replacements=str(replacements))
    softmax = training.train(toy_settings(**common, epochs=4, out=str(folder / "softmax")), progress=False)
    devise = training.train(toy_settings(**common, head="embedding", loss="rank", epochs=3, init=str(softmax.folder),
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


def result_files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_zero_shot_result_killed_at_any_file_leaves_the_earlier_result_whole(held_out_runs, tmp_path, monkeypatch):
    from conftest import Killed, kill_at

    from devise.evaluation.zeroshot import ZeroShotRequest, run_zero_shot

    devise_run = held_out_runs[1]

    def zero_shot(out, examples):
        return run_zero_shot(ZeroShotRequest([devise_run.folder], "unseen", vocabulary="target", out=out,
                                             examples=examples, progress=False, device="cpu"))

    out = tmp_path / "zs"
    zero_shot(out, [0, 1])
    earlier = result_files(out)
    zero_shot(tmp_path / "fresh", [2, 3])
    fresh = result_files(tmp_path / "fresh")
    assert earlier["examples.png"] != fresh["examples.png"]
    for n in range(1, 7):  # the marker, zeroshot.json, similarity.png, examples.png, the folder; then done
        with monkeypatch.context() as patch:
            kill_at(patch, n)
            try:
                zero_shot(out, [2, 3])
                finished = True
            except Killed:
                finished = False
        assert result_files(out) == (fresh if finished else earlier), n
        assert sorted(path.name for path in tmp_path.iterdir()) == ["fresh", "zs"], "nothing left beside it"
    assert finished


def test_zeroshot_refuses_an_out_folder_of_the_users_with_one_line(held_out_runs, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "similarity.png").write_bytes(b"my own figure")
    assert main(["zeroshot", str(held_out_runs[1].folder), "--target", "unseen", "--out", str(mine), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"devise: error: {mine} holds files devise did not write (similarity.png): choose another folder"]
    assert result_files(mine) == {"similarity.png": b"my own figure"}
