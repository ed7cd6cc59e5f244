"""Bounded JSON and YAML parsing (flowcore.documents): aliases, depth and size, refused before they cost."""

from __future__ import annotations

from typing import Any

import pytest

from flowcore.documents import DocumentLimits, check_value, load_json, load_yaml
from flowcore.errors import DocumentTooComplex, MalformedBody

LIMITS = DocumentLimits(max_depth=64, max_nodes=200_000)

# The "billion laughs": ~400 bytes that describe 9^9 (387 million) strings through aliases of aliases.
BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
)


def test_the_bomb_is_small() -> None:
    assert len(BOMB.encode()) < 500


def test_an_alias_bomb_is_refused_before_it_is_built() -> None:
    with pytest.raises(DocumentTooComplex) as caught:
        load_yaml(BOMB, LIMITS)
    assert "aliases expanded" in caught.value.message and caught.value.status_code == 413


@pytest.mark.parametrize("levels", [65, 1_000, 100_000])
def test_yaml_nested_too_deep_is_refused(levels: int) -> None:
    with pytest.raises(DocumentTooComplex, match="deeper than 64"):
        load_yaml("[" * levels + "]" * levels, LIMITS)
    with pytest.raises(DocumentTooComplex, match="deeper than 64"):
        load_yaml("a:\n" + "".join("  " * i + "- \n" for i in range(1, min(levels, 2000))), LIMITS)


@pytest.mark.parametrize("levels", [65, 1_000, 100_000])
def test_json_nested_too_deep_is_refused(levels: int) -> None:
    with pytest.raises(DocumentTooComplex, match="deeper than 64"):
        load_json("[" * levels + "]" * levels, LIMITS)
    with pytest.raises(DocumentTooComplex, match="deeper than 64"):
        load_json('{"a":' * levels + "1" + "}" * levels, LIMITS)


def test_a_self_referencing_alias_is_malformed() -> None:
    with pytest.raises(MalformedBody, match="contains it"):
        load_yaml("a: &a [1, *a]", LIMITS)


def test_too_many_values_without_aliases() -> None:
    small = DocumentLimits(max_depth=64, max_nodes=1000)
    with pytest.raises(DocumentTooComplex, match="more than 1000 values"):
        load_json("[" + ",".join(["1"] * 1000) + "]", small)
    with pytest.raises(DocumentTooComplex, match="more than 1000 values"):
        load_yaml("[" + ",".join(["1"] * 1000) + "]", small)


def test_ordinary_documents_with_anchors_and_merge_keys_load() -> None:
    doc = "defaults: &d {image: x, env: {A: '1'}}\nsteps:\n  - {<<: *d, id: a}\n  - {<<: *d, id: b}\n"
    value: Any = load_yaml(doc, LIMITS)
    assert value["steps"][1] == {"image": "x", "env": {"A": "1"}, "id": "b"}
    assert load_json(b'{"a": [1, 2.5, null, true, "x"]}', LIMITS) == {"a": [1, 2.5, None, True, "x"]}
    assert load_yaml("[" * 64 + "]" * 64, LIMITS) is not None


def test_malformed_documents_name_where() -> None:
    with pytest.raises(MalformedBody, match="line 1, column"):
        load_json("{nope", LIMITS)
    with pytest.raises(MalformedBody, match="malformed YAML at line"):
        load_yaml("a: [1, 2", LIMITS)
    with pytest.raises(MalformedBody, match="UTF-8"):
        load_json(b"\xff\xfe", LIMITS)


def test_check_value_walks_without_recursion() -> None:
    deep: Any = 1
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(DocumentTooComplex):
        check_value(deep, LIMITS)
