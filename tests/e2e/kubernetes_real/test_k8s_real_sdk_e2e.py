"""Tier 3: tier 2's SDK end-to-end subset, on a real cluster (skipped without KUBECONFIG)."""

from __future__ import annotations

from tests.e2e.kubernetes.test_k8s_sdk_e2e import *  # noqa: F403
