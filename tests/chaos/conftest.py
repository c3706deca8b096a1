"""The chaos suite's one system, shared by its tests in file order (one run, fault after fault)."""

from __future__ import annotations

import pytest
from chaos_system import ChaosSystem


@pytest.fixture(scope="module")
def chaos(tmp_path_factory) -> ChaosSystem:
    system = ChaosSystem(tmp_path_factory.mktemp("chaos"))
    yield system
    system.close()
