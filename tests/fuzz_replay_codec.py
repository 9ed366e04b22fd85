"""Coverage-guided fuzzing of the replay cache's decoder with atheris (libFuzzer).

Not part of the test suite (atheris has wheels for some Python versions and platforms
only); ``tests/test_replay_codec.py`` fuzzes the same decoder with hypothesis in every
run. Run it where atheris installs (``pip install atheris``)::

    python tests/fuzz_replay_codec.py -runs=200000          # a fixed number of inputs
    python tests/fuzz_replay_codec.py -max_total_time=300   # or for five minutes

Any input that makes the decoder raise anything but ``ReplayDecodeError`` (or hang:
libFuzzer's ``-timeout``, 25 s by default) is a crash, saved by libFuzzer as
``crash-<sha1>`` in the working directory.
"""
from __future__ import annotations

import io
import sys

import atheris

with atheris.instrument_imports():
    from rxbot.replay.codec import ReplayDecodeError, decode, read_items


def one_input(data: bytes) -> None:
    try:
        decode(data)
    except ReplayDecodeError:
        pass
    try:
        for _ in read_items(io.BytesIO(data)):
            pass
    except ReplayDecodeError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
