"""The names of the files in a replay cache: what rxbot writes there and so may read
back or delete (nothing else in a cache folder is ever touched)."""
from __future__ import annotations

import re

FORMAT = 1
MANIFEST = "manifest.json"
KEY_FILE = "replay.key"
#: data files are named ``<run id>.t<tap>.<suffix>``: written once, never modified
_DATA_RE = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}\.t\d+\.(jsonl|pkl)$")
_TMP_RE = re.compile(r"^manifest\.json\.[0-9a-f]{8}\.tmp$")
_IS_NAME = _DATA_RE


def _is_our_file(name: str) -> bool:
    return name == MANIFEST or bool(_DATA_RE.match(name)) or bool(_TMP_RE.match(name))
