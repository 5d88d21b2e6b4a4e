"""studies/: the study scripts behind some results files run, on tiny inputs (a smoke test each)."""

import subprocess
import sys

from conftest import ROOT

STUDIES = ROOT / "studies"


def study(*args, timeout=240):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


TINY_P3O = ("p3o_continuous.py", "--env-id", "Hopper-v5", "--num-envs", 2, "--num-steps", 256, "--minibatch-size",
            128, "--hidden-dim", 32, "--total-timesteps", 2048, "--reset-frequency", 512, "--threads", 1)
SHARED_RUNS = {"test_reset_optimizer_probe_and_its_analysis_run_on_a_tiny_p3o_run": [TINY_P3O]}


def test_reset_optimizer_probe_and_its_analysis_run_on_a_tiny_p3o_run(tmp_path, shared_runs):
    run = shared_runs.path(*TINY_P3O)
    out = study(STUDIES / "reset_optimizer" / "probe.py", run, "--handling", "keep", "--steps", 1536, "--out",
                tmp_path / "keep")
    assert "updates.csv (3 updates from step 2,048)" in out, out
    lines = (tmp_path / "keep" / "updates.csv").read_text().splitlines()
    assert len(lines) == 1 + 3  # a header and one row per PPO update of the fork
    assert "| keep |" in study(STUDIES / "reset_optimizer" / "analyse.py", "handlings", tmp_path / "keep")
    kl = study(STUDIES / "reset_optimizer" / "analyse.py", "kl", run)
    assert "| p3o_continuous seed 1 | 0–1M | 4 |" in kl, kl  # 4 updates of 512 steps in the first 1M


def test_distillation_graph_reproduction_checks_a_variant_on_the_cpu():
    out = study(STUDIES / "distill_graph_repro.py", "--variants", "as-is")
    assert "as-is: CPU, eager step, max |diff| to eager 0.00e+00; recording needs a CUDA GPU" in out, out


def test_gpu_call_scripts_parse():
    # they need the GPU machine and its wheels to run; here, bash reads them without running anything
    for script in sorted((STUDIES / "gpu").glob("*.sh")):
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, (script.name, proc.stderr)


def test_bit_identity_finds_a_tree_identical_to_itself(tmp_path):
    out = study(STUDIES / "bit_identity.py", ROOT, ROOT, "--out", tmp_path / "runs", "--files", "ppo_continuous.py",
                timeout=600)
    assert "ppo_continuous.py straight: identical (" in out and "ppo_continuous.py resumed: identical (" in out, out


def test_compile_ratio_times_the_update_and_the_policy_step():
    out = study(STUDIES / "compile_ratio.py", ROOT, "eager", "--updates", 1, "--calls", 10)
    assert f"{ROOT} eager: PPO update " in out and " us" in out, out
