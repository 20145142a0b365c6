"""E2B compatibility: the E2B SDK's control plane and envd data plane, translated onto the
workspace services (types follow e2b-dev/E2B spec/, as shipped with the `e2b` 2.20.0 SDK)."""
