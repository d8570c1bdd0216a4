"""``FLEETWAVE_ADDR`` as a list of coordinators, and when a failed request may go to the next."""

from __future__ import annotations

import pytest

from coordinator.addresses import (
    AddressError,
    Attempt,
    Failure,
    all_failed_message,
    may_try_next,
    outcome_unknown_message,
    parse_addresses,
)


class TestParseAddresses:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("http://127.0.0.1:7400", ("http://127.0.0.1:7400",)),
            (
                "https://a:7400, https://b:7400/ ,http://c",
                ("https://a:7400", "https://b:7400", "http://c"),
            ),
            ("http://a:1,http://a:1/,http://b:2", ("http://a:1", "http://b:2")),
            ("https://lb.example/fleetwave/", ("https://lb.example/fleetwave",)),
            ("http://[::1]:7400", ("http://[::1]:7400",)),
        ],
    )
    def test_lists_are_split_trimmed_and_deduplicated_in_order(
        self, value: str, expected: tuple[str, ...]
    ) -> None:
        """Items are trimmed, a trailing slash dropped, repeats tried once, order kept."""
        assert parse_addresses(value) == expected

    @pytest.mark.parametrize(
        ("value", "names"),
        [
            ("", "is empty"),
            (" , ", "is empty"),
            ("http://a:1,,http://b:2", "item 2 is empty"),
            ("http://a:1,", "item 2 is empty"),
            ("127.0.0.1:7400", "'127.0.0.1:7400'"),
            ("ftp://a:21", "the scheme must be http or https"),
            ("http://a:99999", "'http://a:99999'"),
            ("http://a:port", "'http://a:port'"),
            ("http://:7400", "no host"),
            ("http://a:1/?x=1", "no query"),
        ],
    )
    def test_bad_lists_are_usage_errors_naming_the_item(self, value: str, names: str) -> None:
        """An empty item or a bad URL is refused with FLEETWAVE_ADDR/--addr and the item."""
        with pytest.raises(AddressError) as caught:
            parse_addresses(value)
        assert "FLEETWAVE_ADDR (or --addr)" in str(caught.value)
        assert names in str(caught.value)


NOT_CONNECTED = Attempt("http://a", Failure.NOT_CONNECTED, "connection refused")
BROKEN = Attempt("http://a", Failure.BROKEN, "connection reset")
STORE_DOWN = Attempt("http://a", Failure.UNAVAILABLE, "503 ...", "store_unavailable")
OTHER_503 = Attempt("http://a", Failure.UNAVAILABLE, "503 http_error: <html>", "http_error")


class TestMayTryNext:
    @pytest.mark.parametrize(
        ("method", "attempt", "expected"),
        [
            ("GET", NOT_CONNECTED, True),
            ("GET", BROKEN, True),
            ("GET", STORE_DOWN, True),
            ("GET", OTHER_503, True),
            ("POST", NOT_CONNECTED, True),
            ("PUT", STORE_DOWN, True),
            ("DELETE", STORE_DOWN, True),
            ("POST", BROKEN, False),
            ("PUT", BROKEN, False),
            ("DELETE", BROKEN, False),
            ("PATCH", BROKEN, False),
            ("POST", OTHER_503, False),
        ],
    )
    def test_a_change_is_never_sent_twice(
        self, method: str, attempt: Attempt, expected: bool
    ) -> None:
        """Nothing sent, or a coordinator's 503 (nothing changed): next; a read: always next;
        a change whose connection broke after sending, or a 503 not from a coordinator: stop."""
        assert may_try_next(method, attempt) is expected


class TestMessages:
    def test_all_failed_names_every_address_and_what_it_said(self) -> None:
        """One line per coordinator tried, then FLEETWAVE_ADDR."""
        text = all_failed_message(
            [NOT_CONNECTED, Attempt("http://b", Failure.UNAVAILABLE, "503 store_unavailable: x")]
        )
        assert "tried 2" in text
        assert "  http://a: connection refused\n  http://b: 503 store_unavailable: x" in text
        assert "FLEETWAVE_ADDR (or --addr)" in text

    def test_outcome_unknown_says_how_to_check(self) -> None:
        """A broken change names the request, says it may have been applied, points at the
        audit log, and lists the addresses tried before it."""
        text = outcome_unknown_message(
            "POST",
            "/v1/jobs/web/restart",
            BROKEN,
            [Attempt("http://z", Failure.NOT_CONNECTED, "x")],
        )
        assert "POST /v1/jobs/web/restart may or may not have been applied" in text
        assert "`fleetwave audit`" in text
        assert "http://z: x" in text
