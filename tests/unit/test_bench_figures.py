"""The arithmetic behind the server-side figures bench/discovery_load.py prints."""

from __future__ import annotations

from bench.common import Sample, above, bucket_quantile, buckets


def _scrape(counts: dict[str, list[float]]) -> Sample:
    bounds = ("0.001", "0.005", "0.01", "+Inf")
    return {
        "lat_bucket": [
            ({"route": route, "le": le}, value)
            for route, values in counts.items()
            for le, value in zip(bounds, values, strict=True)
        ]
    }


def test_window_quantiles_and_counts_come_from_bucket_differences() -> None:
    before = _scrape({"/a": [10, 10, 10, 10], "/b": [0, 0, 0, 5]})
    # Over the window /a answered 100 more: 90 within 1 ms, 8 more within 5 ms, 1 within 10 ms, 1 beyond.
    after = _scrape({"/a": [100, 108, 109, 110], "/b": [0, 0, 0, 50]})
    window = buckets(before, after, "lat", route="/a")
    assert window == [(0.001, 90), (0.005, 98), (0.01, 99), (float("inf"), 100)]
    assert bucket_quantile(window, 0.50) == 0.001
    assert bucket_quantile(window, 0.98) == 0.005
    assert bucket_quantile(window, 0.99) == 0.01
    assert bucket_quantile(window, 1.0) == float("inf")
    assert above(window, 0.005) == 2
    assert above(window, 0.001) == 10
    assert buckets(before, after, "lat", route="/b")[-1] == (float("inf"), 45)


def test_the_median_round_is_the_middle_one_by_requests_per_second() -> None:
    from bench.discovery_load import median_round  # noqa: PLC0415

    rounds = [{"rps": 3554.0}, {"rps": 4797.0}, {"rps": 4010.0}]
    assert median_round(rounds)["rps"] == 4010.0
    assert median_round(rounds[:2])["rps"] == 3554.0  # even count: the lower middle
