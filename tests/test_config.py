"""Settings: each field says its own help, choices and range; presets are valid settings; TOML files
are read strictly; a run folder's paths mean the same from anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from devise.cli import build_parser
from devise.config import (
    PATH_SETTINGS,
    TrainConfig,
    choices_of,
    config_from,
    help_of,
    preset_settings,
    presets,
    problems,
    settings,
    with_absolute_paths,
)
from devise.errors import DeviseError


def train_help() -> str:
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices["train"].format_help()


def test_every_setting_carries_its_help_and_the_command_line_shows_it():
    text = " ".join(train_help().split())
    for item in settings():
        assert help_of(item), item.name
        assert f"--{item.name.replace('_', '-')}" in text
        assert " ".join(help_of(item).split())[:40] in text, item.name


def test_a_choice_setting_takes_only_its_choices_on_the_command_line_and_in_a_file(tmp_path, capsys):
    assert choices_of("loss") == ("cosine", "hinge", "rank", "crossentropy") and choices_of("epochs") is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--loss", "triplet"])
    assert "invalid choice: 'triplet'" in capsys.readouterr().err
    assert problems(TrainConfig(loss="triplet")) == [
        "--loss must be one of cosine, hinge, rank, crossentropy, not 'triplet'"]


def test_every_preset_is_valid_settings_for_both_heads():
    assert {"cpu", "cpu-long", "gpu", "paper", "pretrained", "demo"} <= set(presets())
    for name, preset in presets().items():
        assert preset["unseen"] > 0 and preset["vocabulary"], name
        for head in ("softmax", "embedding"):  # DeViSE's stage starts from the softmax stage's run
            init = "runs/softmax" if head == "embedding" else None
            assert problems(TrainConfig(**preset_settings(name, head), init=init)) == [], (name, head)


def test_a_settings_file_is_read_strictly_and_an_older_run_s_model_is_its_body():
    assert config_from({"epochs": 3, "model": "cnn"}).body == "cnn"
    with pytest.raises(DeviseError, match="unknown setting"):
        config_from({"learning_rate": 0.1}, "my.toml")
    with pytest.raises(DeviseError, match="--epochs must be a whole number, not 'ten'"):
        config_from({"epochs": "ten"})
    with pytest.raises(DeviseError, match="--lr must be a number, not True"):
        config_from({"lr": True})


def test_every_path_setting_becomes_absolute_but_a_built_in_prompt_set_stays_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {name: "some/where" for name in PATH_SETTINGS}
    config = with_absolute_paths(TrainConfig(**values))
    assert all(Path(getattr(config, name)) == tmp_path / "some" / "where" for name in PATH_SETTINGS)
    assert with_absolute_paths(TrainConfig(prompts="hypernym")).prompts == "hypernym"


def test_the_settings_doc_is_written_from_the_settings_themselves():
    from devise.config import settings_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
    assert doc.read_text() == settings_markdown(), "run python tools/settings_doc.py"
