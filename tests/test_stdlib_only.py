"""The core imports nothing outside the standard library."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys, pkgutil, importlib
before = set(sys.modules)
import agent_budget
for m in pkgutil.walk_packages(agent_budget.__path__, 'agent_budget.'):
    if m.name in ('agent_budget.__main__', 'agent_budget.stores.redis'):
        continue
    importlib.import_module(m.name)
new = sorted(set(sys.modules) - before)
print(json.dumps(new))
"""


def test_core_imports_only_stdlib():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout)
    outside = {
        name.split(".")[0]
        for name in modules
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in ("agent_budget", "_distutils_hack")
    }
    assert outside == set()
