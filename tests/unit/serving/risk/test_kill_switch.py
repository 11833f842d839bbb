from serving.risk.kill_switch import ACTIVE, HALTED, REDUCING, KillSwitch

MS = 1_000_000


def test_trouble_reduces_and_recovers_after_a_healthy_spell():
    ks = KillSwitch(recover_ms=1_000)
    assert ks.evaluate(0, "", True) == "" and ks.state == ACTIVE
    note = ks.evaluate(10 * MS, "stale market data", True)
    assert ks.state == REDUCING and ks.reason == "stale market data" and "active -> reducing" in note
    assert ks.evaluate(500 * MS, "", True) == "" and ks.state == REDUCING  # not healthy long enough
    assert "reducing -> active" in ks.evaluate(1_010 * MS, "", True)


def test_a_halt_goes_through_reducing_until_flat():
    ks = KillSwitch(recover_ms=0)
    ks.halt("daily loss limit")
    ks.evaluate(0, "", flat=False)
    assert ks.state == REDUCING and ks.reason == "daily loss limit"
    ks.evaluate(1, "", flat=True)
    assert ks.state == HALTED
    ks.evaluate(2, "", flat=False)  # a late fill: not flat any more, so it must be able to close it
    assert ks.state == REDUCING
    ks.evaluate(3, "", flat=True)
    ks.evaluate(10**12, "", flat=True)
    assert ks.state == HALTED  # only resume() lifts it


def test_the_first_halt_reason_stands_and_resume_lifts_it():
    ks = KillSwitch(recover_ms=0)
    assert not ks.halt_pending
    ks.halt("max drawdown")
    ks.halt("operator")
    ks.evaluate(0, "", True)
    assert ks.reason == "max drawdown" and ks.halt_pending
    ks.resume()
    assert not ks.halt_pending
    ks.evaluate(1, "", True)
    assert ks.state == ACTIVE and ks.reason == ""


def test_a_timed_halt_lifts_by_itself():
    ks = KillSwitch(recover_ms=0)
    ks.halt("daily loss limit", until_ns=100)
    ks.evaluate(50, "", True)
    assert ks.state == HALTED
    ks.evaluate(100, "", True)
    assert ks.state == ACTIVE and not ks.halt_pending


def test_trouble_during_a_resume_keeps_reducing():
    ks = KillSwitch(recover_ms=0)
    ks.halt("operator")
    ks.evaluate(0, "", True)
    ks.resume()
    ks.evaluate(1, "model failure", True)
    assert ks.state == REDUCING
