from serving.events import LIMIT, Order
from serving.orders import BID_QUOTE, EXIT, WorkingOrder, WorkingOrders

MS = 1_000_000


def order(cid, side=1, qty=1.0, reduce_only=False):
    return Order(cid, "X", side, LIMIT, 100.0, qty, True, reduce_only, "t")


def test_exposure_counts_adding_orders_until_filled():
    book = WorkingOrders()
    book.add(WorkingOrder(order("a", 1, 2.0), BID_QUOTE, None, 1.0, 0))
    book.add(WorkingOrder(order("b", -1, 1.0, reduce_only=True), EXIT, None, 1.0, 0))
    assert (book.buy_open, book.sell_open) == (2.0, 0.0)  # reduce-only never adds exposure
    book.filled("a", 0.5)
    assert book.buy_open == 1.5 and book.bid is not None
    book.filled("a", 1.5)
    assert book.buy_open == 0.0 and book.bid is None and "a" not in book.by_id


def test_a_cancel_counts_until_confirmed_or_timed_out():
    book = WorkingOrders()
    working = WorkingOrder(order("a", 1, 2.0), BID_QUOTE, None, 1.0, 0)
    book.add(working)
    book.cancel(working, 10 * MS)
    assert book.bid is None and book.buy_open == 2.0 and book.cancelling == 1  # may still fill in flight
    book.expire_cancels(20 * MS, 100 * MS)
    assert book.buy_open == 2.0
    book.expire_cancels(110 * MS, 100 * MS)
    assert book.buy_open == 0.0 and book.cancelling == 0 and not book.by_id


def test_a_fill_of_an_unknown_order_changes_nothing():
    assert WorkingOrders().filled("nope", 1.0) is None
