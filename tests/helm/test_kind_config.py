"""The kind cluster config: one control plane and one fake GPU node per worker pool."""

from __future__ import annotations

import re

import yaml
from chart_support import REPO_ROOT

KIND_CONFIG = REPO_ROOT / "deploy" / "kind" / "kind-config.yaml"
PRODUCT_LABEL = "nvidia.com/gpu.product"


def _config():
    return yaml.safe_load(KIND_CONFIG.read_text())


def test_kind_config_api_version():
    config = _config()
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"


def test_kind_nodes_by_role():
    roles = [node["role"] for node in _config()["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]


def test_kind_workers_carry_fake_products():
    workers = [node for node in _config()["nodes"] if node["role"] == "worker"]
    products = [node["labels"][PRODUCT_LABEL] for node in workers]
    assert products == ["FAKE-PREFILL", "FAKE-DECODE"]


def test_kind_cluster_name_matches_makefile():
    makefile = (REPO_ROOT / "Makefile").read_text()
    name = re.search(r"^KIND_CLUSTER \?= (\S+)$", makefile, re.MULTILINE).group(1)
    assert _config()["name"] == name
