"""The test tree itself: pytest's default import mode needs unique test module basenames.

tests/ has no packages (``rootdir``-relative imports with ``pythonpath = tests``), so
two files named ``test_x.py`` in different folders abort the whole collection. A run
of one folder does not see the clash; this check does.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"test modules sharing a basename (rename one): {clashes}"
