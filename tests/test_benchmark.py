"""benchmark.py runs end to end on a tiny configuration and writes its table (it times nothing here)."""

import json
import subprocess
import sys

from conftest import ROOT


def run_benchmark(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmark.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_benchmark_writes_table_and_json(tmp_path):
    proc = run_benchmark("--algos", "ppo_continuous", "p3o_continuous", "--envs", "InvertedPendulum-v5",
                         "--steps", "1024", "--num-envs", "2", "--num-steps", "512", "--env-steps", "64",
                         "--repeats", "2", "--threads", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "benchmark.json").read_text())["envs"]["InvertedPendulum-v5"]
    assert len(result["env_only_sps"]["all"]) == 2 and result["update_seconds"]["median"] > 0
    for algo in ("ppo_continuous", "p3o_continuous"):
        a = result["algos"][algo]
        assert len(a["train_sps"]["all"]) == 2 and a["efficiency"] > 0
    assert result["algos"]["ppo_continuous"]["time_vs_first"] == 1.0
    table = (tmp_path / "benchmark.md").read_text()
    assert "| InvertedPendulum-v5 | p3o_continuous |" in table


def test_benchmark_rejects_bad_arguments(tmp_path):
    proc = run_benchmark("--algos", "no_such_file", "--envs", "Hoper-v5", "--repeats", "0", "--out", str(tmp_path))
    assert proc.returncode != 0
    for message in ("--algos no_such_file", "Hopper-v5", "--repeats 0"):
        assert message in proc.stderr
    assert not (tmp_path / "benchmark.json").exists()
