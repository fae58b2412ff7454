"""Validation of keys, prefixes and values, and round-trips of commands (consensus/core/model.py)."""

from __future__ import annotations

import math
import typing

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from quorumboard.consensus.core.model import (
    KEY_BYTES_MAX,
    VALUE_BYTES_MAX,
    VALUE_DEPTH_MAX,
    ClaimCmd,
    Entry,
    PutCmd,
    Result,
    SetPolicyCmd,
    check_key,
    check_prefix,
    check_value,
)
from quorumboard.consensus.core.state import decode_proposal
from quorumboard.consensus.errors import InvalidCommand, InvalidKey, InvalidValue

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# ------------------------------------------------------------------------------ strategies

_segment_chars = st.characters(
    blacklist_categories=("Cs",),  # no lone surrogates: not encodable as UTF-8
    blacklist_characters="/" + "".join(chr(c) for c in range(0x20)) + "\x7f",
)
segments = st.text(_segment_chars, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
good_keys = (
    st.lists(segments, min_size=1, max_size=6)
    .map("/".join)
    .filter(lambda k: len(k.encode("utf-8")) <= KEY_BYTES_MAX)
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), max_size=6), inner, max_size=4),
    max_leaves=20,
)


def nest(depth: int, leaf: object = 1) -> object:
    """A value whose deepest leaf sits ``depth`` containers down (alternating list/dict)."""
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


# ------------------------------------------------------------------------------ keys


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", "empty"),
        ("a" * (KEY_BYTES_MAX + 1), "longer than"),
        ("é" * (KEY_BYTES_MAX // 2 + 1), "longer than"),  # 257 chars but 514 UTF-8 bytes
        ("/a", "empty segment"),
        ("a/", "empty segment"),
        ("a//b", "empty segment"),
        ("/", "empty segment"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a\x1fb", "control character"),
        ("a\x7fb", "control character"),
        (".", "'.' segment"),
        ("..", "'..' segment"),
        ("a/./b", "'.' segment"),
        ("a/../b", "'..' segment"),
        ("a/..", "'..' segment"),
    ],
)
def test_bad_keys_raise_invalid_key_naming_the_problem(key: str, words: str) -> None:
    with pytest.raises(InvalidKey, match=words.replace(".", r"\.")):
        check_key(key)
    # and no command carrying it can be built
    with pytest.raises((InvalidKey, ValidationError)):
        PutCmd(key=key, value=1)


@pytest.mark.parametrize("key", [None, 5, b"abc", ["a"], 1.5])
def test_non_string_keys_raise_invalid_key(key: object) -> None:
    with pytest.raises(InvalidKey, match="must be a string"):
        check_key(key)
    with pytest.raises(InvalidKey, match="must be a string"):
        check_prefix(key)


def test_key_length_limit_is_in_utf8_bytes_and_inclusive() -> None:
    assert check_key("a" * KEY_BYTES_MAX) == "a" * KEY_BYTES_MAX
    two_byte = "é" * (KEY_BYTES_MAX // 2)  # exactly 512 bytes
    assert check_key(two_byte) == two_byte
    with pytest.raises(InvalidKey, match=str(KEY_BYTES_MAX + 1)):
        check_key("a" * (KEY_BYTES_MAX + 1))
    # a 4-byte character pushes a 509-byte key over the bound
    with pytest.raises(InvalidKey, match="513 bytes"):
        check_key("a" * 509 + "😀")


def test_invalid_key_is_an_invalid_command() -> None:
    assert issubclass(InvalidKey, InvalidCommand)
    assert issubclass(InvalidValue, InvalidCommand)


@settings(max_examples=150, deadline=None)
@given(good_keys, json_values)
def test_good_keys_and_values_round_trip_through_putcmd(key: str, value: object) -> None:
    assert check_key(key) == key
    assert check_value(value) is value
    cmd = PutCmd(key=key, value=value, expect_version=3)
    assert cmd.key == key
    assert cmd.value == value or (isinstance(value, float) and math.isnan(value))
    again = PutCmd.model_validate(cmd.model_dump())
    assert again == cmd
    # and through the wire encoding used by the log
    wire = msgpack.unpackb(msgpack.packb(cmd.model_dump(), use_bin_type=True), raw=False)
    assert PutCmd.model_validate(wire) == cmd


@pytest.mark.parametrize("prefix", ["", "a", "a/", "agents/alice/", "a/b"])
def test_good_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) == prefix
    assert SetPolicyCmd(prefix=prefix, name="merge").prefix == prefix


@pytest.mark.parametrize(
    ("prefix", "words"),
    [("/a", "can match no key"), ("a//", "can match no key"), ("a\x01", "control"),
     ("x" * (KEY_BYTES_MAX + 1), "longer than")],
)
def test_bad_prefixes(prefix: str, words: str) -> None:
    with pytest.raises(InvalidKey, match=words):
        check_prefix(prefix)
    with pytest.raises((InvalidKey, ValidationError)):
        SetPolicyCmd(prefix=prefix, name="merge")


def test_lone_surrogate_keys_are_refused() -> None:
    # a lone surrogate is a valid Python str but not UTF-8: it could never be encoded
    with pytest.raises(InvalidKey, match="UTF-8"):
        check_key("a\ud800b")
    with pytest.raises(InvalidKey, match="UTF-8"):
        check_prefix("a\ud800")
    with pytest.raises((InvalidKey, ValidationError)):
        SetPolicyCmd(prefix="a\ud800", name="merge")


def test_lone_surrogate_values_are_refused_with_invalid_value() -> None:
    with pytest.raises(InvalidValue, match=r"\$"):
        check_value("a\ud800b")
    with pytest.raises(InvalidValue, match=r"\$\.k\[0\]"):
        check_value({"k": ["\udfff"]})
    with pytest.raises(InvalidValue, match="object key"):
        check_value({"\ud800": 1})


# ------------------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (math.nan, "$"),
        (math.inf, "$"),
        (-math.inf, "$"),
        ({"a": [1, math.nan]}, "$.a[1]"),
        ([0, {"b": math.inf}], "$[1].b"),
        (INT64_MAX + 1, "$"),
        (INT64_MIN - 1, "$"),
        ({"n": [2**64]}, "$.n[0]"),
        ({1: "x"}, "$"),
        ({"o": {(1, 2): "x"}}, "$.o"),
        ({1, 2}, "$"),
        ({"s": frozenset()}, "$.s"),
        (b"bytes", "$"),
        ([bytearray(b"x")], "$[0]"),
        ({"o": object()}, "$.o"),
        ([1, 2, 3j], "$[2]"),
    ],
)
def test_bad_values_raise_invalid_value_naming_the_path(value: object, path: str) -> None:
    with pytest.raises(InvalidValue) as info:
        check_value(value)
    assert f" {path} " in f" {info.value} " or f"at {path}" in str(info.value), str(info.value)
    with pytest.raises((InvalidValue, ValidationError)):
        PutCmd(key="k", value=value)
    with pytest.raises((InvalidValue, ValidationError)):
        ClaimCmd(key="k", ttl=1, value=value)


def test_int64_bounds_are_inclusive() -> None:
    for v in (INT64_MIN, INT64_MAX, [INT64_MIN, INT64_MAX]):
        assert check_value(v) == v
    assert check_value(True) is True  # bool is allowed and is not an out-of-range int


def test_depth_limit() -> None:
    ok = nest(VALUE_DEPTH_MAX)
    assert check_value(ok) is ok
    with pytest.raises(InvalidValue, match="deeper than") as info:
        check_value(nest(VALUE_DEPTH_MAX + 1))
    assert "$" in str(info.value)
    # a self-referencing list is bounded by the depth check, not a RecursionError
    cyc: list[object] = []
    cyc.append(cyc)
    with pytest.raises(InvalidValue, match="deeper than"):
        check_value(cyc)


def test_size_limit_is_on_encoded_bytes() -> None:
    # msgpack str header for len >= 2**16 is 5 bytes
    fits = "x" * (VALUE_BYTES_MAX - 5)
    assert len(msgpack.packb(fits, use_bin_type=True)) == VALUE_BYTES_MAX
    assert check_value(fits) is fits
    too_big = "x" * (VALUE_BYTES_MAX - 4)
    with pytest.raises(InvalidValue, match="larger than"):
        check_value(too_big)
    with pytest.raises((InvalidValue, ValidationError)):
        PutCmd(key="k", value={"blob": too_big})
    # many small items that add up over the bound
    with pytest.raises(InvalidValue, match="bytes encoded"):
        check_value(["y" * 1000] * 1100)


def test_set_policy_params_must_be_json_like() -> None:
    with pytest.raises((InvalidValue, ValidationError)):
        SetPolicyCmd(prefix="a/", name="vote", params={"k": math.nan})
    assert SetPolicyCmd(prefix="a/", name="vote", params={"k": 2}).params == {"k": 2}


def test_commands_are_frozen_and_forbid_extra_fields() -> None:
    cmd = PutCmd(key="k", value=1)
    with pytest.raises(ValidationError):
        cmd.key = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        PutCmd(key="k", value=1, colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PutCmd(key="k", expect_version=-1)


@settings(max_examples=100, deadline=None)
@given(good_keys, json_values, st.integers(0, 5))
def test_decode_proposal_accepts_wire_form_of_valid_commands(
    key: str, value: object, seq: int
) -> None:
    wire = {"agent": "alice", "session": 1, "seq": seq,
            "command": {"op": "put", "key": key, "value": value}}
    p = decode_proposal(msgpack.unpackb(msgpack.packb(wire), raw=False))
    assert not hasattr(p, "code"), p
    assert p.command.key == key  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [
        None,
        "put",
        [],
        {},
        {"agent": "a"},
        {"agent": "", "command": {"op": "open_session"}},
        {"agent": "a", "command": {"op": "teleport"}},
        {"agent": "a", "command": {"op": "put", "key": "a//b"}},
        {"agent": "a", "command": {"op": "put", "key": "k", "value": math.nan}},
        {"agent": "a", "session": -1, "command": {"op": "open_session"}},
        {"agent": "a", "command": {"op": "grant", "ttl": 0}},
        {"agent": "a", "command": {"op": "set_policy", "prefix": "/x", "name": "merge"}},
    ],
)
def test_decode_proposal_reports_invalid_input_without_raising(data: object) -> None:
    info = decode_proposal(data)
    assert getattr(info, "code", None) == "invalid", info
    assert info.message  # type: ignore[union-attr]


def _models() -> list[type[BaseModel]]:
    from quorumboard.consensus.core import model
    from quorumboard.consensus.wire import protocol

    found: list[type[BaseModel]] = []
    for module in (model, protocol):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel \
                    and obj not in found:
                found.append(obj)
    return found


def _allows_none(annotation: object) -> bool:
    return annotation is type(None) or type(None) in typing.get_args(annotation)


def test_every_nullable_field_defaults_to_none() -> None:
    """``protocol.encode`` leaves ``None`` fields out; that is lossless only if every field that
    may be ``None`` also defaults to ``None``. A new field that breaks this fails here."""
    offenders = [f"{cls.__name__}.{name}" for cls in _models()
                 for name, field in cls.model_fields.items()
                 if _allows_none(field.annotation)
                 and (field.is_required() or field.default is not None)]
    assert len(_models()) > 20
    assert offenders == []


def test_encode_keeps_json_nulls_inside_values_and_round_trips() -> None:
    from quorumboard.consensus.wire.protocol import Reply, decode, encode

    entry = Entry(key="a/b", value={"x": None, "y": [None, 1]}, version=1, revision=2,
                  author="ag", create_revision=2, mod_revision=2)
    reply = Reply(id=9, result=Result(revision=2, entry=entry))
    assert decode(encode(reply), Reply) == reply
    null_value = Reply(id=9, result=Result(revision=2, entry=entry.model_copy(
        update={"value": None})))
    assert decode(encode(null_value), Reply) == null_value
    cmd = PutCmd(key="a/b", value=None)
    assert msgpack.unpackb(encode(cmd))["op"] == "put"  # discriminators are never dropped
