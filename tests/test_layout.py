"""The shape of the code: layers that import downward only, an inference path free of training,
and a map of the modules that names every one."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src" / "devise"


def test_every_package_imports_only_the_layers_below_it():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (the test extra installs it)")
    result = subprocess.run([lint], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "0 broken" in result.stdout


def test_no_module_imports_one_that_imports_it_back():
    grimp = pytest.importorskip("grimp", reason="import-linter's graph library (the test extra installs it)")
    graph = grimp.build_graph("devise")
    cycles = [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
              if graph.chain_exists(importer=b, imported=a)]
    assert cycles == []


def test_loading_a_model_imports_nothing_of_training():
    code = ("import sys, devise; devise.load; "
            "print(' '.join(m for m in sys.modules if m.startswith('devise')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "devise.model.inference" in loaded
    assert not [m for m in loaded if m.startswith(("devise.training", "devise.evaluation", "devise.experiment"))]
    assert "devise.data.pipeline" not in loaded, "the training batch loader"


def test_the_architecture_doc_names_every_module():
    text = (REPO / "docs" / "architecture.md").read_text()
    modules = sorted(p.relative_to(SOURCE).as_posix() for p in SOURCE.rglob("*.py") if p.name != "__init__.py")
    missing = [m for m in modules if not re.search(rf"(?<![\w/]){re.escape(m)}", text)]
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_every_test_the_docs_cite_exists():
    """docs/ name tests as `tests/FILE.py::NAME`, and `::NAME` for another of the same file."""
    cited = set()
    for doc in (REPO / "docs").glob("*.md"):
        file = None
        for named_file, name in re.findall(r"(?:tests/(test_\w+\.py))?::(test_\w+)", doc.read_text(encoding="utf-8")):
            file = named_file or file
            cited.add((file, name))
    assert len(cited) >= 20
    missing = [f"tests/{file}::{name}" for file, name in sorted(cited, key=str)
               if file is None or not (REPO / "tests" / file).is_file()
               or not re.search(rf"^def {name}\b", (REPO / "tests" / file).read_text(encoding="utf-8"), re.M)]
    assert missing == []
