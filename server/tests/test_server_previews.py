"""Preview tokens: signed, bound to one sandbox and port, and good for at least what was asked."""

from __future__ import annotations

import pytest

from workspace_server.domain.previews import PreviewAddress, PreviewTokens

KEY = b"k" * 32
WEB = PreviewAddress("sbx-0123456789abcdef", 8000)


@pytest.mark.parametrize("issued_at", [100.0, 100.001, 100.5, 100.999])
def test_a_token_lasts_at_least_the_seconds_asked(issued_at: float) -> None:
    tokens = PreviewTokens(KEY)
    token, expires = tokens.issue(WEB, 1, now=issued_at)
    assert expires >= issued_at + 1
    assert tokens.check(token, WEB, now=issued_at + 0.999) is None
    assert tokens.check(token, WEB, now=expires) == "the preview token has expired"


def test_a_token_opens_only_its_own_sandbox_and_port() -> None:
    tokens = PreviewTokens(KEY)
    token, _ = tokens.issue(WEB, 60, now=0.0)
    assert tokens.check(token, PreviewAddress(WEB.sandbox_id, 8001), now=1.0) == (
        "the preview token is for another sandbox or port"
    )
    assert tokens.check(token, PreviewAddress("sbx-fedcba9876543210", 8000), now=1.0) is not None


def test_a_token_signed_with_another_key_is_refused() -> None:
    token, _ = PreviewTokens(b"o" * 32).issue(WEB, 60, now=0.0)
    assert PreviewTokens(KEY).check(token, WEB, now=1.0) == "the preview token is not valid"
    assert PreviewTokens(KEY).check("no-dot-here", WEB, now=1.0) == "the preview token is not valid"
