"""The SDK's end-to-end tests, unchanged, with sandboxes as pods (tier 2: fake API server,
real agent over TCP with its token). Tests that need root inside the sandbox are left out:
sandbox pods run as a non-root user (the `restricted` Pod Security Standard)."""

from __future__ import annotations

from tests.e2e.sdk.test_sdk_e2e_background import (  # noqa: F401
    test_a_client_disconnect_never_kills_the_process,
    test_disconnect_then_reconnect_at_an_offset_byte_for_byte,
    test_start_runs_detached_and_events_carry_contiguous_offsets,
    test_stdin_round_trip_through_cat_and_clear_errors,
    test_timeout_kills_the_process_and_says_so,
)
from tests.e2e.sdk.test_sdk_e2e_files import (  # noqa: F401
    large_file,
    test_copy_between_sandboxes_by_streaming,
    test_directory_errors,
    test_download_of_missing_file_leaves_nothing,
    test_large_file_upload_download_async,
    test_large_file_upload_download_sync,
    test_read_stream_chunks_and_size,
    test_relative_paths_start_at_workspace,
    test_write_from_generator_and_parents_are_created,
)
from tests.e2e.sdk.test_sdk_e2e_pty import (  # noqa: F401
    test_async_pty_marker_round_trip,
    test_detach_and_reattach_replays_output,
    test_rest_resize_and_kill,
    test_sync_pty_marker_round_trip,
)
from tests.e2e.sdk.test_sdk_e2e_streams import (  # noqa: F401
    test_breaking_out_of_a_stream_closes_it_and_kills_the_process,
    test_kill_through_the_stream_pid,
    test_process_timeout_error_async,
    test_stdin_is_delivered_and_closed,
    test_stream_command_timeout_ends_with_error_event,
    test_stream_events_in_order_async,
    test_stream_events_in_order_sync,
    test_stream_utf8_is_never_split,
)
