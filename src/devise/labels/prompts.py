"""Prompt templates for sentence label spaces: a label read as "a photo of a {}." (CLIP's way), and
with its WordNet parent: "a photo of a goldfish, a kind of cyprinid."."""

from __future__ import annotations

import re

from devise.config import PROMPT_SETS
from devise.errors import DeviseError, read_text_file

# CLIP-style templates (CLIP averages many such; these few suit small photos of objects).
DEFAULT_PROMPTS = ("a photo of a {}.", "a low resolution photo of a {}.", "a cropped photo of a {}.",
                   "a close-up photo of a {}.", "a photo of the small {}.", "a photo of the large {}.")


# The same, each naming the label's WordNet hypernym: "a photo of a goldfish, a kind of cyprinid."
# A label is a point among its neighbours in WordNet, not a bare word (docs/zero-shot.md).
HYPERNYM_PROMPTS = tuple(t[:-1] + ", a kind of {parent}." for t in DEFAULT_PROMPTS)


BUILT_IN_PROMPTS = dict(zip(PROMPT_SETS, (DEFAULT_PROMPTS, HYPERNYM_PROMPTS)))


PARENT = "{parent}"


PARENT_CLAUSE = re.compile(r",[^,{}]*\{parent\}")


def read_prompts(prompts: str | list[str] | None) -> tuple[str, ...]:
    """Templates from a `--prompts` value: none, a built-in set ("default", "hypernym"), a file
    with one template per line, or the templates themselves (as an exported model keeps them).
    Each holds {} where the label goes, and may hold one {parent} clause after a comma (", a kind
    of {parent}"), read with the label's WordNet hypernym and left out for a label with none."""
    if not prompts:
        return ()
    if isinstance(prompts, str) and prompts in BUILT_IN_PROMPTS:
        return BUILT_IN_PROMPTS[prompts]
    if isinstance(prompts, (list, tuple)):
        templates = tuple(prompts)
    else:
        text = read_text_file(prompts, "prompts file")
        templates = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    wrong = [t for t in templates if t.count("{}") != 1 or "{" in PARENT_CLAUSE.sub("", t, count=1).replace("{}", "")]
    if not templates or wrong:
        raise DeviseError(f"{prompts}: each template needs exactly one {{}} where the label goes, and at most one "
                          f"{PARENT} after a comma (', a kind of {PARENT}')"
                          + (f" (not {wrong[0]!r})" if wrong else " (the file has none)"))
    return templates


def fill_template(template: str, phrase: str, parent: str | None) -> str:
    """One prompt: the phrase in the template, with the hypernym's name in its {parent} clause,
    or without that clause when the label has no hypernym ("a photo of a goldfish.")."""
    template = template.replace(PARENT, parent) if parent else PARENT_CLAUSE.sub("", template)
    return template.replace("{}", phrase)
