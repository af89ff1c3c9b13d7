"""Files written atomically (a temporary file in the same folder, then a rename): a killed process leaves the old
file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile


def write_json_atomic(path: str, obj: dict) -> None:
    """Writes JSON through a temporary file and a rename."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path: str) -> dict:
    """The JSON object in ``path``."""
    with open(path) as f:
        return json.load(f)
