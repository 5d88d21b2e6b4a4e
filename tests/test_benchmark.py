"""benchmark.py runs end to end on a tiny configuration and writes its table (it times nothing here)."""

import json
import subprocess
import sys

from conftest import ROOT, run_in_process


def run_benchmark(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "benchmark.py"), *args], cwd=cwd, capture_output=True,
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
    proc = run_in_process("benchmark.py", "--algos", "no_such_file", "--envs", "Hoper-v5", "--repeats", "0", "--out",
                          tmp_path)
    assert proc.returncode != 0
    for message in ("--algos no_such_file", "Hopper-v5", "--repeats 0"):
        assert message in proc.stderr
    assert not (tmp_path / "benchmark.json").exists()


def test_sac_benchmark_times_sac_sbp_beside_a_cleanrl_file_and_reports_their_ratio(tmp_path):
    # a stand-in for the patched CleanRL file: it must be run from a temporary folder with its repository root
    # (where cleanrl_utils lives) on PYTHONPATH, and its learning-phase line is parsed like the real one's
    (tmp_path / "cleanrl_utils").mkdir()
    (tmp_path / "cleanrl_utils" / "__init__.py").write_text("SPEED = 25.0\n")
    (tmp_path / "cleanrl").mkdir()
    fake = tmp_path / "cleanrl" / "sac_continuous_action.py"
    fake.write_text("import sys\nfrom cleanrl_utils import SPEED\nassert '--learning-starts' in sys.argv\n"
                    "print(f'LEARNING_SPS {SPEED} (30.0 per CPU second)')\n")
    proc = run_benchmark("--algos", "--sac-envs", "Pendulum-v1", "--sac-steps", "64", "--sac-learning-starts", "64",
                         "--cleanrl-sac", "cleanrl/sac_continuous_action.py",  # relative, as a user would type it
                         "--repeats", "2", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sac = json.loads((tmp_path / "out" / "benchmark.json").read_text())["sac"]["Pendulum-v1"]
    assert sac["cleanrl_sac"]["all"] == [25.0, 25.0] and all(s > 0 for s in sac["sac_sbp"]["all"])
    assert sac["ratio"]["all"] == [s / 25.0 for s in sac["sac_sbp"]["all"]]
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| Pendulum-v1 |" in table and "PPO family" not in table


def test_sac_benchmark_rejects_a_missing_cleanrl_file(tmp_path):
    proc = run_in_process("benchmark.py", "--algos", "--sac-envs", "Pendulum-v1", "--cleanrl-sac", tmp_path / "nope.py",
                          "--out", tmp_path)
    assert proc.returncode != 0 and "--cleanrl-sac" in proc.stderr and "nope.py" in proc.stderr


def test_benchmark_cuda_fails_clearly_without_a_gpu(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_in_process("benchmark.py", "--cuda", "--compile", "--envs", "InvertedPendulum-v5", "--out", tmp_path)
    assert proc.returncode != 0 and "--cuda was given but torch sees no CUDA GPU" in proc.stderr
    proc = run_in_process("benchmark.py", "--cudagraphs", "--envs", "InvertedPendulum-v5", "--out", tmp_path)
    assert proc.returncode != 0 and "--cudagraphs needs --cuda" in proc.stderr
    assert not (tmp_path / "benchmark.json").exists()
