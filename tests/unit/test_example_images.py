"""The examples' images: one content tag computed for the script and for the definitions, and
definitions that run program files from the image instead of inline scripts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from examples import images
from examples.wordcount import pipeline, wordcount

REPO = Path(__file__).resolve().parents[2]
WORDCOUNT = REPO / "examples" / "wordcount"


def test_the_script_lists_the_references_the_definitions_use() -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "build_example_images.sh"), "--list"], capture_output=True, text=True, check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [ref for _, _, ref, _ in images.images()]
    assert images.reference("wordcount") == wordcount.IMAGE and wordcount.IMAGE in done.stdout.split()
    assert wordcount.IMAGE.startswith("agentainer-flow/wordcount:")


def test_the_content_tag_follows_the_build_context_only(tmp_path: Path) -> None:
    copy = tmp_path / "wordcount"
    shutil.copytree(WORDCOUNT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    tag = images.content_tag(copy)
    assert tag == images.content_tag(WORDCOUNT) and len(tag) == images.TAG_LENGTH
    (copy / "data" / "extra.txt").write_text("not in the image")
    (copy / "README.txt").write_text("neither")
    assert images.content_tag(copy) == tag
    program = copy / "steps" / "count_words.py"
    program.write_text(program.read_text() + "\n# edited\n")
    assert images.content_tag(copy) != tag
    assert [p.name for p in images.context_files(copy)] == [
        "Dockerfile", ".dockerignore", "count_words.py", "list_documents.py", "summary.py", "top_words.py",
    ]


def test_wordcount_steps_run_programs_from_the_image() -> None:
    definitions = [wordcount.config().to_definition(), wordcount.config(urls=[]).to_definition(), pipeline.definition()]
    for definition in definitions:
        for step in definition["steps"]:
            if "command" not in step:
                continue  # the branch
            assert step["image"] == wordcount.IMAGE, step["id"]
            interpreter, path = step["command"]
            assert interpreter == "python3" and path.startswith("/app/"), step["command"]
            assert (WORDCOUNT / "steps" / Path(path).name).is_file()
    dockerfile = (WORDCOUNT / "Dockerfile").read_text()
    assert "COPY steps/*.py /app/" in dockerfile and "\nRUN" not in dockerfile


def test_an_example_with_several_dockerfiles_has_one_image_each() -> None:
    listed = {name: (directory.name, ref, dockerfile) for name, directory, ref, dockerfile in images.images()}
    for kind in ("planner", "worker", "reviewer"):
        directory, ref, dockerfile = listed[f"agentainer-flow/agents-{kind}"]
        assert (directory, dockerfile) == ("agents", f"Dockerfile.{kind}")
        assert ref == images.reference("agents", kind)
        assert ref.split(":")[1] == images.content_tag(REPO / "examples" / "agents", f"Dockerfile.{kind}")
    assert len({listed[f"agentainer-flow/agents-{k}"][1] for k in ("planner", "worker", "reviewer")}) == 3
