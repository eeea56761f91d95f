"""The store: a corrupt record is reported and can be deleted; the API loads no asyncio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from virtcontainers import api
from virtcontainers.config import PodConfig
from virtcontainers.errors import CorruptRecordError

CORRUPTIONS = {
    "not json": "{",
    "a list": "[]",
    "an old version": json.dumps({"version": 1}),
    "a bad state": None,
    "a bad container": None,
    "deep nesting": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_corrupt_record_is_reported_and_can_be_deleted(run_root: Path, kind: str) -> None:
    api.create_pod(PodConfig(id="good", hypervisor="mock"))
    api.create_pod(PodConfig(id="bad", hypervisor="mock"))
    state = run_root / "pods" / "bad" / "state.json"
    text = CORRUPTIONS[kind]
    if text is None:
        data = json.loads(state.read_text())
        if kind == "a bad state":
            data["state"] = "exploded"
        else:
            data["containers"] = {"c": {"config": {"id": 5}}}
        text = json.dumps(data)
    state.write_text(text)
    assert [p.id for p in api.list_pods()] == ["good"]
    errors = api.list_pod_errors()
    assert [e.pod_id for e in errors] == ["bad"] and str(state) in str(errors[0])
    with pytest.raises(CorruptRecordError, match="virtc pod delete bad"):
        api.pod_status("bad")
    api.delete_pod("bad")
    assert not (run_root / "pods" / "bad").exists()
    assert api.list_pod_errors() == []


def test_importing_the_api_loads_no_asyncio() -> None:
    code = "import sys, virtcontainers.api; print('asyncio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
