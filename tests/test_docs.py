"""The README's engine-code example runs as written against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, ServerProcess


def test_readme_python_example_runs(server_process: ServerProcess, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(import asyncio.*?)```", readme, re.S)
    assert block, "README lost its Python example"
    code = block.group(1)
    assert '"127.0.0.1:50051"' in code
    script = tmp_path / "example.py"
    script.write_text(code.replace('"127.0.0.1:50051"', f'"{server_process.address}"'))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # It prints the runnable workflow ids: exactly the one it started and woke up.
    ids = re.findall(r"'([0-9a-f-]{36})'", result.stdout)
    assert len(ids) == 1, result.stdout
