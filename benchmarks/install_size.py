"""The installed size of devise's core: every distribution its dependencies pull in (markers and
extras followed) in the current environment, from each one's list of installed files.

Prints one JSON line: the total, torch, the CUDA libraries and triton, and the rest, in MB. Names
after the command are added to the core (`gensim pyarrow`), names with a leading minus taken out
(`-scikit-learn`), to price a dependency without building a second environment.
Usage: python benchmarks/install_size.py [NAME | -NAME ...]
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def closure(roots: list[str]) -> dict[str, metadata.Distribution]:
    """Every installed distribution that `roots` require, with the extras each requirement names."""
    found, done, todo = {}, set(), [(root, "") for root in roots]
    while todo:
        name, extra = todo.pop()
        name = canonicalize_name(name)
        if (name, extra) in done:
            continue
        done.add((name, extra))
        try:
            found[name] = dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                todo += [(requirement.name, ""), *((requirement.name, e) for e in requirement.extras)]
    return found


def installed_bytes(dist: metadata.Distribution) -> int:
    paths = (dist.locate_file(file) for file in dist.files or [])
    return sum(os.lstat(path).st_size for path in paths if os.path.lexists(path))


def main() -> None:
    core = [Requirement(line).name for line in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    removed = {canonicalize_name(name[1:]) for name in sys.argv[1:] if name.startswith("-")}
    roots = [name for name in core if canonicalize_name(name) not in removed]
    roots += [name for name in sys.argv[1:] if not name.startswith("-")]
    sizes = {name: installed_bytes(dist) for name, dist in closure(roots).items()}
    cuda = sum(size for name, size in sizes.items() if name.startswith(("nvidia", "cuda-")) or name == "triton")
    torch = sizes.get("torch", 0)
    print(json.dumps({"benchmark": "install_size", "roots": roots, "distributions": len(sizes),
                      "total_mb": round(sum(sizes.values()) / 1e6), "torch_mb": round(torch / 1e6),
                      "cuda_and_triton_mb": round(cuda / 1e6),
                      "rest_mb": round((sum(sizes.values()) - torch - cuda) / 1e6)}))


if __name__ == "__main__":
    main()
