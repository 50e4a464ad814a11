import subprocess
import sys

import vlmdpo


def test_version():
    assert vlmdpo.__version__


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "vlmdpo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "data" in out.stdout
