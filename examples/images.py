"""The examples' container images and their content-addressed references.

An example directory with a ``Dockerfile`` (``examples/wordcount``) is built by
``scripts/build_example_images.sh`` into ``agentainer-flow/<example>``, ``FROM`` the local base image;
each ``Dockerfile.<variant>`` beside it into ``agentainer-flow/<example>-<variant>`` (same context).
The build context is the ``Dockerfile``, ``.dockerignore`` and the step programs ``steps/*.py``. Its
``.dockerignore`` admits nothing else. The tag is a hash of exactly those files, so:

- the definitions can name the image before it is built (:func:`reference`);
- a changed step program gives a new tag, and with it a new pool key. A running pool therefore never
  hands a task to a warm container of the old image;
- the script skips an image whose tag exists (and was built on the current base image).

Stdlib only, so that the script can run it with any ``python3``::

    python3 examples/images.py          # one line per image: NAME, DIRECTORY, REFERENCE, DOCKERFILE (tab-separated)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
REPOSITORY_PREFIX = "agentainer-flow/"
TAG_LENGTH = 12


def context_files(directory: Path, dockerfile: str = "Dockerfile") -> list[Path]:
    """The files of an example's build context, in a fixed order."""
    fixed = [directory / dockerfile, directory / ".dockerignore"]
    programs = sorted((directory / "steps").glob("*.py"), key=lambda p: p.name)
    return [p for p in fixed if p.is_file()] + programs


def content_tag(directory: Path, dockerfile: str = "Dockerfile") -> str:
    """A hash of the build context: each file's path in the context, then its bytes."""
    digest = hashlib.sha256()
    for path in context_files(directory, dockerfile):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(directory).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:TAG_LENGTH]


def reference(example: str, variant: str | None = None) -> str:
    """``agentainer-flow/<example>:<content tag>``: the image the example's steps run in.

    With ``variant``, the image of ``Dockerfile.<variant>`` in the same directory (one example with
    several images, such as ``agents``): ``agentainer-flow/<example>-<variant>:<content tag>``.
    """
    directory = EXAMPLES / example
    dockerfile = f"Dockerfile.{variant}" if variant else "Dockerfile"
    if not (directory / dockerfile).is_file():
        raise FileNotFoundError(f"examples/{example} has no {dockerfile}")
    name = f"{example}-{variant}" if variant else example
    return f"{REPOSITORY_PREFIX}{name}:{content_tag(directory, dockerfile)}"


def images() -> list[tuple[str, Path, str, str]]:
    """Every example image: (repository, build context directory, reference, Dockerfile name)."""
    found: list[tuple[str, Path, str, str]] = []
    for dockerfile in sorted(EXAMPLES.glob("*/Dockerfile*")):
        directory, variant = dockerfile.parent, dockerfile.name.partition(".")[2] or None
        if variant is not None and not variant.isidentifier():
            continue
        name = f"{directory.name}-{variant}" if variant else directory.name
        found.append((f"{REPOSITORY_PREFIX}{name}", directory, reference(directory.name, variant), dockerfile.name))
    return found


def main() -> int:
    for name, directory, ref, dockerfile in images():
        print(name, directory, ref, dockerfile, sep="\t")
    return 0


if __name__ == "__main__":
    sys.exit(main())
