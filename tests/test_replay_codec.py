"""The replay cache's msgpack codec under fuzzing (issue 26 item 3) and as a property.

* random bytes, and valid records mutated (bytes flipped, cut, inserted), decoded as one
  record and as a file: the result is an item or a ``ReplayDecodeError`` — never another
  exception, never a hang. Each test runs a fixed number of examples (hypothesis'
  ``max_examples``, ``deadline=None``): the time per input is bounded by the codec's
  limits, which the suite's timeout would catch, never by a wall-clock threshold here;
* hostile records that would cost unbounded time or memory if evaluated (a Decimal
  ``1E+100000000``, a Fraction or int beyond the limits, nesting past the limit, a
  container header claiming more elements than the data holds) are refused;
* generated nested values round-trip exactly, types included.

``tests/fuzz_replay_codec.py`` runs the same decoder under atheris (coverage-guided)
where atheris installs; it is not part of the suite.
"""
from __future__ import annotations

import datetime
import decimal
import fractions
import io
import uuid
import zoneinfo

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxbot.replay.codec import (MAX_DEPTH, MAX_FRACTION_BYTES, MAX_INT_BYTES, Ext, ReplayDecodeError,
                                ReplayedError, ReplayEncodeError, decode, encode, read_items)

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: generating nested values costs hypothesis more than decoding them costs us
VALUES_FUZZ = settings(FUZZ, max_examples=150)


def decoded_or_refused(payload: bytes) -> None:
    """Decoding ``payload`` as a record and as a file gives values or ReplayDecodeError."""
    for attempt in (lambda: decode(payload), lambda: list(read_items(io.BytesIO(payload)))):
        try:
            attempt()
        except ReplayDecodeError:
            pass


# ---- values ------------------------------------------------------------------------------------
hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 6000), max_value=10 ** 6000)
    | st.floats(allow_nan=False) | st.text() | st.binary()
    | st.datetimes(timezones=st.none() | st.timezones() | st.just(datetime.timezone(datetime.timedelta(hours=5))))
    | st.dates() | st.times(timezones=st.none() | st.just(datetime.timezone.utc)) | st.timedeltas()
    | st.decimals(allow_nan=False) | st.fractions() | st.complex_numbers(allow_nan=False) | st.uuids()
)
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.sets(hashable, max_size=4)
                   | st.frozensets(hashable, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
                   | st.dictionaries(hashable, inner, max_size=3)),
    max_leaves=10,
)


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True would hide a change)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
    if isinstance(a, (datetime.datetime, datetime.time)):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    return a == b


@VALUES_FUZZ
@given(values)
def test_generated_nested_values_round_trip_exactly(value):
    back = decode(encode(value))
    assert same(back, value), (value, back)
    assert same(list(read_items(io.BytesIO(encode(value) * 2))), [value, value])


# ---- fuzzing -----------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_give_an_item_or_the_codecs_error(payload):
    decoded_or_refused(payload)


@st.composite
def mutated_records(draw):
    """A valid record of a generated value (or a few), then damaged."""
    record = b"".join(encode(v) for v in draw(st.lists(values, min_size=1, max_size=2)))
    data = bytearray(record)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:  # a byte that means something to msgpack: a header, an ext code, a length
            data[at] = draw(st.sampled_from([0xC1, 0xC7, 0xC8, 0xC9, 0xD4, 0xD8, 0xDC, 0xDD, 0xDE, 0xDF,
                                             0xDB, 0xC6, 0xFF, 0x7F, Ext.TUPLE, Ext.DECIMAL, Ext.FRACTION,
                                             Ext.BIGINT, Ext.EXCEPTION, Ext.DATACLASS]))
    return bytes(data)


@VALUES_FUZZ
@given(mutated_records())
def test_mutated_valid_records_give_an_item_or_the_codecs_error(payload):
    decoded_or_refused(payload)


def ext(code: int, payload: bytes) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, payload))


def nested_tuples(depth: int) -> bytes:
    inner = msgpack.packb(0)
    for _ in range(depth):
        inner = msgpack.packb([msgpack.ExtType(Ext.TUPLE, inner)])[1:]  # the tuple itself, not a list of it
    return inner


HOSTILE = {
    "decimal 1E+100000000": ext(Ext.DECIMAL, b"1E+100000000"),
    "decimal with a long exponent": ext(Ext.DECIMAL, b"1E-" + b"9" * 40),
    "decimal that is not a number": ext(Ext.DECIMAL, b"1e5; import os"),
    "fraction beyond the limit": ext(Ext.FRACTION, msgpack.packb(
        [msgpack.ExtType(Ext.BIGINT, b"\x01" * (MAX_FRACTION_BYTES + 1)), 3])),
    "fraction with a zero denominator": ext(Ext.FRACTION, msgpack.packb([1, 0])),
    "int beyond the limit": ext(Ext.BIGINT, b"\x7f" * (MAX_INT_BYTES + 1)),
    "tuples nested past the limit": nested_tuples(MAX_DEPTH + 1),
    "lists nested past msgpack's stack": b"\x91" * 5000 + b"\x00",
    "an array claiming 2**32-1 elements": b"\xdd\xff\xff\xff\xff" + b"\x00" * 8,
    "a map claiming 2**32-1 entries": b"\xdf\xff\xff\xff\xff" + b"\x00" * 8,
    "a str claiming 4 GiB": b"\xdb\xff\xff\xff\xff" + b"a" * 8,
    "an unhashable key": msgpack.packb({0: 1})[:1] + msgpack.packb([1]) + msgpack.packb(2),
    "an unknown ext type": ext(99, b""),
    "a class never imported": ext(Ext.DATACLASS, msgpack.packb(["never_imported_module_xyz:Thing", {}])),
    "a builtin that is no class": ext(Ext.ENUM, msgpack.packb(["builtins:open", 1])),
    "a dunder path to a class": ext(Ext.DATACLASS, msgpack.packb(["os:__class__.__base__", {}])),
    "invalid utf-8 text": b"\xa2\xff\xfe",
    "a zone key escaping the zone folder": ext(Ext.DATETIME, b"\x07\xe8\x05\x01\x0c\x1e\x00\x00\x00\x00\x00\x00Z../../etc/passwd"),
    "a datetime out of range": ext(Ext.DATETIME, b"\x00\x00\x05\x01\x0c\x1e\x00\x00\x00\x00\x00\x00"),
    "a timezone offset of two days": ext(Ext.TIME, b"\x01\x02\x03\x00\x00\x00\x00\x00O\x00\x02\xa3\x00\x00\x00\x00\x00"),
    "a short complex": ext(Ext.COMPLEX, b"\x00" * 7),
    "a short uuid": ext(Ext.UUID, b"\x00" * 15),
    "two records where one is expected": msgpack.packb(1) + msgpack.packb(2),
}


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_records_are_refused_with_the_codecs_error(payload):
    with pytest.raises(ReplayDecodeError):
        decode(payload)


def test_the_writer_refuses_what_the_reader_would_refuse():
    for value in (decimal.Decimal("1E+100000000"), fractions.Fraction(10 ** 20000, 3), 1 << (MAX_INT_BYTES * 8)):
        with pytest.raises(ReplayEncodeError):
            encode(value)
    deep: object = 0
    for _ in range(MAX_DEPTH + 1):
        deep = (deep,)
    with pytest.raises(ReplayEncodeError, match="nest more than"):
        encode(deep)
    loop: list = []
    loop.append(loop)
    with pytest.raises(ReplayEncodeError):
        encode(loop)


def test_numbers_near_the_limits_round_trip():
    for value in (10 ** 4301, -(10 ** 20000) + 7, 1 << (MAX_INT_BYTES * 8 - 2), fractions.Fraction(10 ** 19000, 7),
                  decimal.Decimal("9" * 50_000 + "E+900000"), decimal.Decimal("-sNaN42"), uuid.UUID(int=2 ** 128 - 1),
                  datetime.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"), fold=1)):
        assert same(decode(encode(value)), value)


def test_the_replay_benchmark_checks_what_it_times():
    from benchmarks import bench_replay

    name, encode, decode_file = bench_replay.codec_functions()
    assert name == "msgpack codec"
    for item in (bench_replay.PLAIN, bench_replay.RICH):
        assert bench_replay.round_trip(encode, decode_file, item, 3) == 3
    rows = bench_replay.bench_mode(50, repeat=1)
    assert [r.case for r in rows] == ["3 sync steps, replay mode off", "3 sync steps, replay mode on (recorded, deleted)"]
    assert "WRONG" not in rows[1].note


# ---- what reaches the disk -----------------------------------------------------------------------
class TokenRefused(Exception):
    """A user's exception class (rebuilt as ReplayedError when not importable)."""


@pytest.mark.parametrize("error", [
    ValueError("GET https://api.example/items?api_key=s3cr3t-v4lue failed"),
    TokenRefused("login failed: password=s3cr3t-v4lue"),
    KeyError("Authorization: Bearer s3cr3t-v4lue"),
], ids=["builtin-url", "user-class", "builtin-header"])
def test_an_errors_text_reaches_the_replay_file_redacted(error):
    """A failed item kept by the pipein policy carries its error into the replay cache: the
    error's text leaves the process there, so it is redacted (items themselves replay
    exactly); the rest of the error comes back as it was."""
    from rxbot.errors import StepError

    item = {"url": "https://shop.example/p/1", "n": 1}
    for value in (error, StepError("parse", item, error)):
        data = encode(value)
        assert b"s3cr3t-v4lue" not in data
        back = decode(data)
        inner = back.exception if isinstance(back, StepError) else back
        assert "s3cr3t-v4lue" not in str(inner) and "***" in str(inner)
        # builtin errors are rebuilt as themselves, others stand in as ReplayedError
        expected = type(error) if type(error).__module__ == "builtins" else ReplayedError
        assert type(inner) is expected
        if isinstance(back, StepError):
            assert back.item == item and back.step == "parse"  # the item itself is exact
