"""The Kubernetes runtime: every sandbox is a Pod (plus a Secret with its agent token)."""
