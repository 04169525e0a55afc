"""A run on a Ray cluster started beforehand: two Ray nodes on this machine (loopback).

The head has CPUs only; the second node has the only (fake) GPU, so verl's training workers and
the rollout server must land there. Neither node has the launching shell's environment
(``VERL_SDAR_WORK``) or working directory: the recipe's paths must be resolved where the job is
launched (``verl_sdar.launch.DriverPathsCallback``), and Ray's CPU/GPU counts must not be passed
to ``ray.init`` when it joins a cluster (``verl_sdar.cpu.defaults``). The job is launched from a
folder that is not the repository, with a relative ``VERL_SDAR_WORK``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_env(cwd: Path) -> dict:
    # RAY_ADDRESS (tests/conftest.py sets "local") would override the address these runs name
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_SDAR_") and k != "RAY_ADDRESS"}
    return dict(env, RAY_AUTH_MODE="disabled", PWD=str(cwd), TOKENIZERS_PARALLELISM="false")


def _stop(temp_dir: Path) -> None:
    """Stop this test's Ray processes only (their command lines name its temp folder)."""
    import psutil

    mine = [p for p in psutil.process_iter(["cmdline"]) if str(temp_dir) in " ".join(p.info["cmdline"] or [])]
    family = {c for p in mine for c in _children(p)} | set(mine)
    for process in family:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def _children(process):
    try:
        return process.children(recursive=True)
    except Exception:  # noqa: BLE001 - gone already
        return []


@pytest.fixture
def two_nodes():
    # short paths: Ray's socket paths must stay under the OS limit
    temp_dir = Path(tempfile.mkdtemp(prefix="rsd", dir="/tmp"))
    elsewhere = Path(tempfile.mkdtemp(prefix="rsdcwd", dir="/tmp"))
    port = _free_port()
    env = _cluster_env(elsewhere)
    common = ["--disable-usage-stats", "--include-dashboard=false"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=24", "--num-gpus=0",
                        f"--temp-dir={temp_dir}", *common], check=True, env=env, cwd=elsewhere, timeout=180,
                       capture_output=True)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=8", "--num-gpus=1",
                        '--resources={"sdar_second_node": 1}', "--disable-usage-stats"], check=True, env=env,
                       cwd=elsewhere, timeout=180, capture_output=True)
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        _stop(temp_dir)
        shutil.rmtree(elsewhere, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _node_of_actors(logs: Path) -> dict[str, set[str]]:
    """Actor class name -> ids of the nodes its processes ran on (from Ray's per-worker logs)."""
    nodes: dict[str, set[str]] = {}
    for out in logs.glob("worker-*.out"):
        match = re.search(r"^:actor_name:(\S+)", out.read_text(errors="replace"), re.M)
        if not match:
            continue
        worker_id, pid = out.stem.split("-")[1], out.stem.split("-")[-1]
        core = logs / f"python-core-worker-{worker_id}_{pid}.log"
        node = re.search(r"node_id=([0-9a-f]+)", core.read_text(errors="replace")) if core.exists() else None
        if node:
            nodes.setdefault(match.group(1), set()).add(node.group(1))
    return nodes


def _node_ids(logs: Path) -> dict[str, str]:
    """raylet log file -> its node id."""
    ids = {}
    for raylet in logs.glob("raylet*.out"):
        match = re.search(r"Setting node ID node_id=([0-9a-f]+)", raylet.read_text(errors="replace"))
        if match:
            ids[raylet.name] = match.group(1)
    return ids


def test_the_cpu_demo_runs_on_a_two_node_ray_cluster(two_nodes, tmp_path):
    from verl_sdar.tasks.codeword import build
    from verl_sdar.tiny_model import build_tiny_model

    address, temp_dir = two_nodes
    launch = tmp_path / "launch"  # the launching folder: not the repository
    build_tiny_model(launch / "w" / "tiny-model", seed=0)
    build(launch / "w" / "codeword", n_train=16, n_val=8, seed=0)
    metrics = launch / "metrics.jsonl"
    env = dict(_cluster_env(launch), VERL_SDAR_WORK="w", WANDB_MODE="disabled")
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes' / 'cpu'}",
           "--config-name=codeword_sdar", "trainer.total_training_steps=1", "trainer.logger=[console,file]",
           f"++ray_kwargs.ray_init.address={address}", f"hydra.run.dir={launch / 'hydra'}",
           # the TaskRunner runs on the cluster, with the nodes' environment: what it needs travels in
           # Ray's runtime_env (the README's "Ray cluster" section)
           f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}"]
    log = launch / "run.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=launch, timeout=900)
    text = log.read_text()
    assert proc.returncode == 0, text[-6000:]
    assert "plugin failed to load" not in text
    assert f"-> {launch / 'w' / 'tiny-model'}" in text  # resolved where the job was launched
    assert "ray_kwargs.ray_init.num_cpus" not in text  # the cluster's own counts

    (record,) = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert record["step"] == 1
    assert record["data"]["sdar/teacher_pass_s"] > 0 and record["data"]["sdar/privileged_tokens_mean"] > 0
    assert "actor/sdar/loss" in record["data"]  # the SDAR term ran in the actor worker

    logs = temp_dir / "session_latest" / "logs"
    node_ids = _node_ids(logs)
    assert len(node_ids) == 2, node_ids
    second = next(i for name, i in node_ids.items() if name != "raylet.out")
    placed = _node_of_actors(logs)
    # the workers that need the (fake) GPU: verl's fused training worker and our CPU rollout server
    # (verl_sdar.cpu.hf_rollout), which only exists where the plugin loaded
    assert placed.get("WorkerDict") == {second}, placed
    assert placed.get("HFRolloutServer") == {second}, placed
