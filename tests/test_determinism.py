"""Generation is deterministic across processes: the MobileNet project of every target has the
same content hash in two Python processes with different string-hash seeds (set and dict order,
``id``-based keys and the like would show up here and not within one process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qlane.codegen.targets import target_names

MOBILENET = Path(__file__).resolve().parent.parent / "examples" / "mobilenet_v1_0.25_128_u8.tflite"
SCRIPT = """
import json, sys
from qlane.codegen.emit import content_hash, generate
from qlane.codegen.targets import load_target, target_names
from qlane.sim import load_tflite
graph = load_tflite(sys.argv[1])
print(json.dumps({t: content_hash(generate(graph, load_target(t))) for t in target_names()}))
"""


def test_mobilenet_projects_hash_alike_in_two_processes() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(MOBILENET)],
                              env={**os.environ, "PYTHONHASHSEED": seed},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in ("1", "2")]
    hashes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        hashes.append(json.loads(out))
    assert set(hashes[0]) == set(target_names()), hashes[0]
    differ = {t: (hashes[0][t], hashes[1][t]) for t in hashes[0] if hashes[0][t] != hashes[1][t]}
    assert not differ, f"project content differs between processes: {differ}"
