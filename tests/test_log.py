"""Logging and progress: lines a person reads, and no other library's progress bars among them."""

from __future__ import annotations

import logging
import os

import pytest

from devise.log import configure, duration, quiet_third_parties


@pytest.fixture
def command_line_logging():
    """`configure` as the command line calls it, undone afterwards (its handlers hold this test's streams)."""
    root = logging.getLogger("devise")
    level = root.level
    yield configure
    for handler in [h for h in root.handlers if not isinstance(h, logging.NullHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)


def test_the_command_lines_information_is_stamped_with_the_time_and_its_warnings_are_not(command_line_logging,
                                                                                        capsys):
    command_line_logging()
    logging.getLogger("devise.test").info("epoch 1/2")
    logging.getLogger("devise.test").warning("a notice")
    printed = capsys.readouterr()
    day, time, text = printed.out.removeprefix("devise: ").split(" ", 2)
    assert len(day) == 10 and day[4] == day[7] == "-" and len(time) == 8 and text == "epoch 1/2\n"
    assert printed.err == "devise: a notice\n"


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (0.4, 45, 340.2, 3725)] == ["0 s", "45 s", "5 min 40 s", "1 h 02 min"]


def test_quieting_third_parties_turns_their_bars_off_and_keeps_a_users_own_choice(monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    try:
        quiet_third_parties()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TRANSFORMERS_VERBOSITY"] == "info"
        assert not transformers.utils.logging.is_progress_bar_enabled()
        assert logging.getLogger("sentence_transformers").getEffectiveLevel() == logging.ERROR
    finally:
        transformers.utils.logging.enable_progress_bar()
