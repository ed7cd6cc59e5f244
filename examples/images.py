"""The examples' container images and their content-addressed references.

An example directory with a ``Dockerfile`` (``examples/wordcount``) is built by
``scripts/build_example_images.sh`` into ``agentainer-flow/<example>``, ``FROM`` the local base image.
The build context is the ``Dockerfile``, ``.dockerignore`` and the step programs ``steps/*.py``. Its
``.dockerignore`` admits nothing else. The tag is a hash of exactly those files, so:

- the definitions can name the image before it is built (:func:`reference`);
- a changed step program gives a new tag, and with it a new pool key. A running pool therefore never
  hands a task to a warm container of the old image;
- the script skips an image whose tag exists (and was built on the current base image).

Stdlib only, so that the script can run it with any ``python3``::

    python3 examples/images.py          # one line per image: NAME, DIRECTORY, REFERENCE (tab-separated)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
REPOSITORY_PREFIX = "agentainer-flow/"
TAG_LENGTH = 12


def context_files(directory: Path) -> list[Path]:
    """The files of an example's build context, in a fixed order."""
    fixed = [directory / "Dockerfile", directory / ".dockerignore"]
    programs = sorted((directory / "steps").glob("*.py"), key=lambda p: p.name)
    return [p for p in fixed if p.is_file()] + programs


def content_tag(directory: Path) -> str:
    """A hash of the build context: each file's path in the context, then its bytes."""
    digest = hashlib.sha256()
    for path in context_files(directory):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(directory).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:TAG_LENGTH]


def reference(example: str) -> str:
    """``agentainer-flow/<example>:<content tag>``: the image the example's steps run in."""
    directory = EXAMPLES / example
    if not (directory / "Dockerfile").is_file():
        raise FileNotFoundError(f"examples/{example} has no Dockerfile")
    return f"{REPOSITORY_PREFIX}{example}:{content_tag(directory)}"


def images() -> list[tuple[str, Path, str]]:
    """Every example image: (repository, build context directory, reference)."""
    found = sorted(p.parent for p in EXAMPLES.glob("*/Dockerfile"))
    return [(f"{REPOSITORY_PREFIX}{d.name}", d, reference(d.name)) for d in found]


def main() -> int:
    for name, directory, ref in images():
        print(name, directory, ref, sep="\t")
    return 0


if __name__ == "__main__":
    sys.exit(main())
