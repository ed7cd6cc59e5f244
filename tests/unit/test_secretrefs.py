"""Secret references in env, their substitution, masking, and the at-rest cipher (pure)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from flowcore.errors import ConfigError, InvalidInput
from flowcore.pool_api import ErrorKind, StateOp, TaskError, TaskLogLine, TaskResult
from flowcore.secretrefs import MASK, Redactor, check_env, redact_result, references, substitute
from flowcore.secretstore import SecretCipher, SecretUnavailable, check_value, resolve_key

KEY = "k" * 40


def test_references_and_substitution() -> None:
    env = {"A": "${{ secrets.db }}", "B": "x=${{secrets.pw}};y=${{  secrets.db  }}", "C": "plain ${{ other }}"}
    assert references(env) == {"db", "pw"}
    assert substitute(env, {"db": "DBV", "pw": "PWV"}) == {"A": "DBV", "B": "x=PWV;y=DBV", "C": "plain ${{ other }}"}
    with pytest.raises(KeyError):
        substitute(env, {"db": "DBV"})


@pytest.mark.parametrize("value", ["${{ secrets.a:b }}", "${{ secrets. }}", "${{ secrets.x", "${{secrets.-x}}",
                                   "${{ secrets.x.y }}"])
def test_malformed_references_are_422_naming_the_env_key(value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_env({"GOOD": "1", "BAD": value}, "steps[2].")
    assert err.value.field == "steps[2].env.BAD"


def test_too_many_references_in_one_step() -> None:
    env = {f"K{i}": "${{ secrets.s%d }}" % i for i in range(51)}  # noqa: UP031
    with pytest.raises(InvalidInput, match="at most 50"):
        check_env(env, "steps[0].")


def test_redactor_masks_text_json_values_and_keys() -> None:
    r = Redactor(["hunter22", "abc", "hunter2"])  # "abc" is too short to be masked
    assert r.values == ("hunter22", "hunter2")  # longest first: no half-masked longer value
    assert r.text("pw=hunter22 and hunter2, abc") == f"pw={MASK} and {MASK}, abc"
    assert r.value({"hunter2": ["x hunter2 y", 3, None, {"k": "hunter22"}]}) == {MASK: [f"x {MASK} y", 3, None, {"k": MASK}]}
    assert not Redactor([]) and Redactor([]).value({"a": "hunter2"}) == {"a": "hunter2"}


def test_redactor_survives_output_nested_deeper_than_the_recursion_limit() -> None:
    deep: object = "hunter2"
    for _ in range(20_000):
        deep = [deep]
    masked = Redactor(["hunter2"]).value(deep)
    for _ in range(20_000):
        assert isinstance(masked, list)
        masked = masked[0]
    assert masked == MASK


def test_redact_result_covers_every_field_a_step_writes() -> None:
    result = TaskResult(
        task_id="t", ok=False, output={"v": "s3cret!"}, log_tail="tail s3cret!",
        logs=[TaskLogLine(stream="stdout", line="line s3cret!", ts=1.0)],
        state_updates=[StateOp(op="set", key="k", value=["s3cret!"])],
        error=TaskError(kind=ErrorKind.EXIT_CODE, message="failed with s3cret!"),
    )
    out = redact_result(result, Redactor(["s3cret!"]))
    assert "s3cret!" not in out.model_dump_json()
    assert out.error is not None and out.error.message == f"failed with {MASK}"
    assert redact_result(result, Redactor([])) is result


def test_the_cipher_binds_a_value_to_its_name_and_key() -> None:
    cipher = SecretCipher(KEY)
    sealed = cipher.encrypt("db", "postgres://x")
    assert "postgres" not in sealed and cipher.decrypt("db", sealed) == "postgres://x"
    assert cipher.encrypt("db", "postgres://x") != sealed  # a fresh nonce every time
    with pytest.raises(SecretUnavailable, match="cannot be decrypted"):
        cipher.decrypt("other", sealed)  # moved under another name
    with pytest.raises(SecretUnavailable):
        SecretCipher("z" * 40).decrypt("db", sealed)  # another stack's key


@pytest.mark.parametrize("value", ["abc", "", 5, None, "x" * (64 * 1024 + 1)])
def test_values_too_short_long_or_not_text_are_refused(value: object) -> None:
    with pytest.raises(InvalidInput):
        check_value(value)


def test_resolve_key(tmp_path: Path) -> None:
    assert resolve_key(SecretStr(KEY), tmp_path / "k") == KEY
    with pytest.raises(ConfigError, match="at least 32"):
        resolve_key(SecretStr("short"), tmp_path / "k")
    assert resolve_key(SecretStr(""), tmp_path / "k", bind_host="0.0.0.0") is None  # disabled, not generated
    generated = resolve_key(SecretStr(""), tmp_path / "k", bind_host="127.0.0.1")
    assert generated and resolve_key(SecretStr(""), tmp_path / "k") == generated  # every process reads the same
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
