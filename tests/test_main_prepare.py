"""The prepare stage through gream_jax.main: in-process (:smoke) and as the documented command line."""

import json
import os
import subprocess
import sys

import numpy as np
from conftest import REPO_ROOT
from data_fixtures import ml100k_cache_dir
from test_config import load_config_file

from gream_jax import main
from gream_jax.data import load_prepared


def test_run_prepare_in_process(tmp_path, tmp_path_factory, capsys):
    config = load_config_file("ml100k", "smoke")
    config.stage = "prepare"
    config.data.cache_dir = ml100k_cache_dir(tmp_path_factory)
    config.data.download_timeout_s = 0.0
    summaries = main.run(config, str(tmp_path))
    assert set(summaries) == {"prepare"}
    s = summaries["prepare"]
    assert (s["n_users"], s["n_items"], s["n_interactions"]) == (943, 1682, 100000)
    out = capsys.readouterr().out
    assert "1,682" in out and "100,000" in out
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["density"] == 100000 / (943 * 1682) and stats["dropped_users"] == 0
    assert stats["history_length_percentiles"]["p0"] == 20 and stats["history_length_percentiles"]["p100"] == 737
    data, split = load_prepared(str(tmp_path), config)
    assert split.n_users == 943 and split.max_history == 20
    assert sum(len(t) for t in split.train) == 100000 - 2 * 943
    hist, lengths = split.histories("test")
    # Test input = every item but the last (>= 19 since each user has >= 20 ratings), capped at 20.
    expected = [min(len(s) - 1, 20) for s in data.sequences]
    assert hist.shape == (943, 20) and lengths.tolist() == expected and lengths.min() == 19
    np.testing.assert_array_equal(hist[0], data.sequences[0][-21:-1])
    assert data.items[0].title == "Toy Story"


def test_documented_command_downloads_and_prints_counts(tmp_path):
    """The README/issue command on an EMPTY cache: the recbole wheel is really fetched with pip."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "gream_jax.main", "--config=configs/ml100k.py",
           "--config.stage=prepare", f"--workdir={tmp_path / 'w'}", f"--config.data.cache_dir={cache}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split("  ")[0].strip(): line.split()[-1] for line in proc.stdout.splitlines() if "  " in line}
    assert lines["users"] == "943" and lines["items"] == "1,682" and lines["interactions"] == "100,000"
    assert os.path.isfile(cache / "recbole-1.2.1-py3-none-any.whl")
    assert os.path.isfile(tmp_path / "w" / "data" / "split.npz")
