"""tf.distribute: a two-replica step equals the one-replica step; two real workers train to the same weights."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from dim_tf import distribute, model_dir, registry

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def test_two_replica_step_matches_one_replica_step():
    out = subprocess.run([sys.executable, os.path.join(HERE, "replica_step_check.py")], capture_output=True,
                         text=True, timeout=300, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["max_update"] > 1e-4  # the step really moved the weights
    assert result["max_weight_diff"] < 1e-5, result
    assert abs(result["loss_one"] - result["loss_two"]) < 1e-5


def test_unknown_strategy_and_missing_tf_config(monkeypatch):
    with pytest.raises(ValueError, match="unknown strategy"):
        distribute.strategy_from_flag("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.strategy_from_flag("multi_worker")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_on_localhost_train_to_the_same_weights(tmp_path, mnist_folder):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        cmd = [sys.executable, "-m", "dim_tf.train", "--model", "im", "--strategy", "multi_worker",
               "--model_dir", str(tmp_path / f"worker{index}"), "--data_dir", mnist_folder,
               "--train_examples", "512", "--batch_size", "64", "--epochs", "1"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "2 replica(s)" in out
    (model0, manifest0), (model1, manifest1) = [model_dir.load(str(tmp_path / f"worker{i}")) for i in range(2)]
    fresh = registry.build(registry.TrainConfig(model="im")).get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(model0.get_weights(), fresh)) > 1e-3  # it trained
    for a, b in zip(model0.get_weights(), model1.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert manifest0["replicas"] == manifest1["replicas"] == 2
