"""opslab.clock writes what datetime's isoformat would, without importing datetime."""

from datetime import UTC, datetime

import pytest

from opslab.clock import iso_utc


@pytest.mark.parametrize("seconds", [0, 0.5, 1.9999996, 1_764_470_109.905781, 4_102_444_799.999999,
                                     951_782_400.000001])  # 2000-02-29, a leap day
def test_iso_utc_is_what_datetime_writes(seconds: float) -> None:
    moment = datetime.fromtimestamp(seconds, UTC)
    assert iso_utc(seconds) == moment.isoformat(timespec="microseconds")
    assert iso_utc(seconds, fraction=False) == moment.isoformat(timespec="seconds")
    assert datetime.fromisoformat(iso_utc(seconds)) == moment
