"""CallGate: waits wake on close, drain waits for calls in flight and a quiet period."""
import threading
import time
from concurrent.futures import Future

from vlm3r_ros.pipeline.call_gate import CallGate, Wait


def test_wait_returns_done_timeout_or_closed():
    gate = CallGate()
    done: Future = Future()
    done.set_result(1)
    assert gate.wait(done, 1.0) is Wait.DONE
    assert gate.wait(Future(), 0.01) is Wait.TIMEOUT
    pending: Future = Future()
    outcome = []
    waiter = threading.Thread(target=lambda: outcome.append(gate.wait(pending, 30.0)))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    gate.close()
    waiter.join(5.0)
    assert outcome == [Wait.CLOSED] and time.monotonic() - started < 1.0
    assert gate.wait(Future(), 30.0) is Wait.CLOSED  # closed: no wait at all


def test_enter_refuses_once_closed_and_reopen_serves_again():
    gate = CallGate()
    assert gate.enter() and gate.in_flight == 1
    gate.close()
    assert not gate.enter() and gate.in_flight == 2  # refused calls are still answered
    gate.reopen()
    assert gate.enter()


def test_drain_waits_for_calls_in_flight_then_quiet():
    gate = CallGate()
    gate.enter()
    gate.close()
    started = time.monotonic()  # before the timer: its 0.2 s count from here at the latest
    threading.Timer(0.2, gate.leave).start()
    assert gate.drain(quiet_s=0.1, timeout_s=5.0)
    assert time.monotonic() - started >= 0.3  # 0.2 s in flight, then 0.1 s quiet
    gate.enter()  # never leaves
    started = time.monotonic()
    assert not gate.drain(quiet_s=0.1, timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 3.0  # loose: a loaded CI machine is slow
