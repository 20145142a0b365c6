"""Host uid ranges: one per sandbox, the lowest free one, given back, adopted after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from workspace_server.domain.errors import ResourceExhausted
from workspace_server.runtimes import uid_ranges
from workspace_server.runtimes.uid_ranges import FIRST_HOST_UID, RANGE_SIZE, UidRanges


def test_each_sandbox_gets_its_own_range_and_keeps_it() -> None:
    ranges = UidRanges()
    first, second = ranges.take("sbx-a"), ranges.take("sbx-b")
    assert (first, second) == (FIRST_HOST_UID, FIRST_HOST_UID + RANGE_SIZE)
    assert ranges.take("sbx-a") == first  # asking again changes nothing


def test_a_range_given_back_is_the_next_one_taken() -> None:
    ranges = UidRanges()
    for name in ("a", "b", "c"):
        ranges.take(name)
    ranges.give_back("b")
    ranges.give_back("never-held")
    assert ranges.take("d") == FIRST_HOST_UID + RANGE_SIZE
    assert ranges.take("e") == FIRST_HOST_UID + 3 * RANGE_SIZE


def test_ranges_of_surviving_sandboxes_are_adopted_and_not_handed_out() -> None:
    ranges = UidRanges()
    ranges.adopt("old", FIRST_HOST_UID)
    ranges.adopt("older", FIRST_HOST_UID + 2 * RANGE_SIZE)
    ranges.adopt("odd", FIRST_HOST_UID + 5)  # not a range start: ignored
    assert ranges.take("new") == FIRST_HOST_UID + RANGE_SIZE
    assert ranges.take("newer") == FIRST_HOST_UID + 3 * RANGE_SIZE


def test_the_ranges_run_out_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uid_ranges, "RANGES", 2)
    ranges = UidRanges()
    ranges.take("a")
    ranges.take("b")
    with pytest.raises(ResourceExhausted, match="uid ranges"):
        ranges.take("c")


def test_every_range_stays_inside_32_bit_uids() -> None:
    assert uid_ranges.range_start(uid_ranges.RANGES - 1) + RANGE_SIZE < 2**31
    assert uid_ranges.range_index(uid_ranges.range_start(7)) == 7
    assert uid_ranges.range_index(FIRST_HOST_UID - RANGE_SIZE) is None


def test_two_servers_sharing_the_host_registry_never_share_a_range(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    first_dir, second_dir = tmp_path / "one" / "sandboxes", tmp_path / "two" / "sandboxes"
    for directory, sandbox_id in ((first_dir, "sbx-a"), (second_dir, "sbx-b"), (second_dir, "sbx-c")):
        (directory / sandbox_id).mkdir(parents=True)
    first, second = UidRanges(registry, first_dir), UidRanges(registry, second_dir)
    taken = {first.take("sbx-a"), second.take("sbx-b"), second.take("sbx-c")}
    assert len(taken) == 3
    second.give_back("sbx-b")
    assert first.take("sbx-a") == FIRST_HOST_UID


def test_a_claim_whose_sandbox_is_gone_is_taken_over(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    dead, live = tmp_path / "dead" / "sandboxes", tmp_path / "live" / "sandboxes"
    (dead / "sbx-gone").mkdir(parents=True)
    (live / "sbx-new").mkdir(parents=True)
    assert UidRanges(registry, dead).take("sbx-gone") == FIRST_HOST_UID
    (dead / "sbx-gone").rmdir()  # its server died and its bundle went with the data dir
    assert UidRanges(registry, live).take("sbx-new") == FIRST_HOST_UID
