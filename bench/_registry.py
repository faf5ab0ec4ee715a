"""The benchmark's ``docker-registry serve`` processes: the test harness's launcher
(``tests/harness/registry.py``), with the access log on, which is how the benchmark
counts requests, and with an RTT a delay line (``delayline.py``) in front, at
``front_host``, where the tools reach it.  Independent of ``reconciler``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.harness

from delayline import DelayLine
from tests.harness import registry as harness

Registry = harness.Registry


def start_registry(name: str, parent: Path, rtt_ms: float = 0.0) -> Registry:
    """A registry with its storage in a temporary directory under ``parent``, removed at ``stop()``."""
    registry = harness.start_registry(name, parent=parent, access_log=True)
    if rtt_ms:
        try:
            registry.front = DelayLine(registry.host, rtt_ms)
        except BaseException:
            registry.stop()
            raise
    return registry
