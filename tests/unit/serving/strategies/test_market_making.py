import pytest

from serving.config import EngineConfig, MarketMakingConfig, RiskConfig
from serving.strategies import MarketMaking
from serving.strategies.base import NO_QUOTE


@pytest.fixture()
def mm():
    return MarketMaking(MarketMakingConfig(min_half_spread_bps=2, vol_spread_mult=10, imbalance_spread_mult=0.5,
                                           inventory_skew=1.0, model_skew=1.0, adverse_ofi=0.5))  # fmt: skip


def test_quotes_symmetric_around_the_microprice_when_neutral(harness, mm):
    v = harness.view(bid=100.0, ask=100.01, bid_qty=1, ask_qty=1, rv_fast=1e-5)
    bid, ask, half = mm.quotes(v, 0.0)
    assert half == pytest.approx(2e-4)
    assert (bid + ask) / 2 == pytest.approx(v.microprice)
    assert ask - bid == pytest.approx(2 * half * v.microprice)


def test_volatility_widens_the_spread(harness, mm):
    _, _, calm = mm.quotes(harness.view(rv_fast=1e-5), 0.0)
    _, _, wild = mm.quotes(harness.view(rv_fast=1e-4), 0.0)
    assert wild == pytest.approx(1e-3) and calm < wild


def test_book_imbalance_widens_the_side_it_leans_against(harness, mm):
    bid0, ask0, _ = mm.quotes(harness.view(), 0.0)
    bid, ask, _ = mm.quotes(harness.view(book_imbalance=-0.8), 0.0)  # heavy asks: the bid is at risk
    assert bid < bid0 and ask == pytest.approx(ask0)


def test_inventory_and_model_skew_the_centre(harness, mm):
    bid0, ask0, _ = mm.quotes(harness.view(), 0.0)
    bid, ask, _ = mm.quotes(harness.view(), 0.5)  # long: lean lower to sell
    assert bid < bid0 and ask < ask0
    bid, ask, _ = mm.quotes(harness.view(p_up=0.7), 0.0)  # model bullish: lean higher
    assert bid > bid0 and ask > ask0


def test_inventory_limit_and_adverse_flow_pull_a_side(harness, mm):
    assert mm.quotes(harness.view(), 1.0)[0] == NO_QUOTE
    assert mm.quotes(harness.view(), -1.0)[1] == NO_QUOTE
    bid, ask, _ = mm.quotes(harness.view(ofi=-0.7), 0.0)  # sellers in control: no bid
    assert bid == NO_QUOTE and ask > 0


def test_engine_quotes_requotes_only_on_enough_movement_and_cancels_on_nan(harness):
    h = harness(EngineConfig())
    out = h.tick(100.0)
    quotes = h.orders(out)
    assert sorted(o.side for o in quotes) == [-1, 1] and all(o.post_only and o.type == "limit" for o in quotes)
    assert all(o.tag == "market_making" for o in quotes)
    assert h.tick(100.0) == []  # nothing moved: nothing sent
    bid = next(o for o in quotes if o.side > 0)
    out = h.tick(100.01)  # up a tick: the ask is now too aggressive, the bid merely more passive
    assert [o.side for o in h.orders(out)] == [-1]
    assert bid.client_id not in [c.client_id for r in out for c in r.cancels]
    out = h.tick(99.5)  # 50 bp down: the bid is now far too aggressive
    assert [c.client_id for r in out for c in r.cancels] and [o.side for o in h.orders(out)]
    out = h.tick(99.5, rv_fast=float("nan"))  # no signal: stand aside
    assert len([c for r in out for c in r.cancels]) == 2 and not h.orders(out)


def test_engine_unwinds_inventory_only_when_the_regime_no_longer_allows_it(harness):
    from serving.config import RegimeConfig, RoutingConfig

    config = EngineConfig(routing=RoutingConfig(normal=("market_making",), volatile=()),
                          regime=RegimeConfig(confirm_ticks=1, min_dwell_ms=0))  # fmt: skip
    h = harness(config)
    h.tick(100.0)
    bid = next(o for o in h.orders() if o.side > 0)
    h.tick(bid.price - 0.05, ask=bid.price)  # someone sells into our bid
    assert h.position == bid.qty
    out = h.tick(bid.price - 0.05, ask=bid.price, rv_fast=4e-5)  # volatile: may only unwind now
    assert out[-1].regime == "volatile"
    new = [o for o in h.orders(out) if o.tag == "market_making"]
    assert new and all(o.side == -1 and o.reduce_only and o.qty <= h.position for o in new)
    live = h.engine.symbols[h.SYMBOL].orders
    assert live.bid is None and live.ask is not None and live.ask.order.reduce_only


def test_inventory_limit_bounds_the_position(harness):
    config = EngineConfig(risk=RiskConfig(position_limits_base={"BTC/USDT:USDT": 1.0}))
    h = harness(config, equity=1_000_000)
    for i in range(40):  # the market keeps selling into our bids
        h.tick(100.0 - i * 0.5, ask=100.0 - i * 0.5 + 0.1)
        assert h.position <= 1.0 * 0.6 + 1e-9  # max_inventory_fraction of the limit
