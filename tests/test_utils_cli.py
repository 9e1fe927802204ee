"""`gream_jax.utils.cli.run_cli`: a CLI piped into `head` ends quietly, anything else is unchanged."""

import os
import subprocess
import sys

import pytest

from gream_jax.utils.cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ~1 MB of output: far more than a pipe holds, so writes continue after `head` has exited.
_SCRIPT = """
import sys
from absl import app
from gream_jax.utils.cli import run_cli

def main(argv=None):
    for i in range(10000):
        print(f"line {i} " + "x" * 100)

if sys.argv[1] == "plain":
    run_cli(main)
elif sys.argv[1] == "absl":
    run_cli(app.run, main)
else:
    main()
"""


def _piped_into_head(tmp_path, how):
    script = tmp_path / "cli.py"
    script.write_text(_SCRIPT)
    cmd = f"{sys.executable} {script} {how} | head -n 1; echo \"rc=${{PIPESTATUS[0]}}\""
    return subprocess.run(["bash", "-c", cmd], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how", ["plain", "absl"])
def test_closed_pipe_ends_with_status_1_and_no_traceback(tmp_path, how):
    out = _piped_into_head(tmp_path, how)
    assert out.stdout.splitlines() == ["line 0 " + "x" * 100, "rc=1"], out.stdout
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


def test_without_it_the_same_program_crashes(tmp_path):
    """The scenario the helper exists for: the bare program does die of a BrokenPipeError."""
    out = _piped_into_head(tmp_path, "bare")
    assert "BrokenPipeError" in out.stderr


def test_return_values_and_other_errors_pass_through():
    assert run_cli(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ValueError, match="bad row"):
        run_cli(lambda: (_ for _ in ()).throw(ValueError("bad row")))
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: sys.exit(3))
    assert e.value.code == 3
