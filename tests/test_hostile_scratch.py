from decimal import Decimal
from typing import Any
import redis
from hypothesis import HealthCheck, assume, given, settings as hs, strategies as st
from tests.test_hostile import sub_settings, api_calls, pay_calls, test_track_calls_record_or_name_the_argument as T

def known(v: Any) -> bool:
    if isinstance(v, bool): return False
    if isinstance(v, int) and (abs(v) >= 2**1000 or type(v) is not int): return True
    if isinstance(v, float) and (type(v) is not float or abs(v) > 1e300): return True
    if isinstance(v, Decimal) and (v.is_snan() or (v.is_finite() and abs(v) > Decimal("1e300"))): return True
    if isinstance(v, str) and type(v) is not str: return True
    return False

inner = T.hypothesis.inner_test

@hs(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(calls=st.lists(st.one_of(api_calls, pay_calls), min_size=1, max_size=6))
def test_scratch(rclient: redis.Redis, sub_settings: Any, calls: Any) -> None:
    for c in calls:
        for v in c[1:]:
            assume(not known(v) and not (hasattr(v, "offset_s") and False))
    inner(rclient, sub_settings, calls)
