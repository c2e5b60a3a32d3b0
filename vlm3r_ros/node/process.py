"""The node's process: spin, stop on SIGINT/SIGTERM or the shutdown transition, exit code.

The process ends with 0 after a signal or the lifecycle ``shutdown`` transition, once every
call in flight was answered (SHUTTING_DOWN) and the workers stopped; with 1 when the
executor crashed (an exception escaped a callback), after logging it.
"""
from __future__ import annotations

import signal
import threading
import traceback
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

EXIT_OK, EXIT_CRASH = 0, 1
# How long to wait for the change_state response after the shutdown transition ran.
SHUTDOWN_ANSWER_TIMEOUT_S = 2.0


class Spinner(threading.Thread):
    """Spin an executor in a thread; keep the exception that ended it, if any."""

    def __init__(self, executor: Any) -> None:
        """Prepare to spin ``executor`` (call :meth:`start`)."""
        super().__init__(name='vlm3r-spin', daemon=True)
        self._executor = executor
        self.error: BaseException | None = None
        self.error_text = ''

    def run(self) -> None:
        """Spin until the executor or the context shuts down, or a callback raises."""
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported as the exit code
            self.error = exc
            self.error_text = traceback.format_exc()


def wait_for_stop(node: Any, spinner: Spinner, stop: threading.Event,
                  period_s: float = 0.1) -> str:
    """Block until a signal (``stop``), the shutdown transition or a crash; say which."""
    while True:
        if stop.wait(period_s):
            return 'signal'
        if node.finalized.is_set():
            node.shutdown_answered.wait(SHUTDOWN_ANSWER_TIMEOUT_S)
            return 'shutdown transition'
        if not spinner.is_alive():
            return 'crash' if spinner.error is not None else 'executor stopped'


def run_node(node_factory: Callable[[], Any], args: list[str] | None = None) -> int:
    """Create, autostart and spin the node; return the process exit code."""
    stop = threading.Event()
    # Installed before anything slow, so a signal during start-up is no KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = node_factory()
    queue_size = node.get_parameter('request_queue_size').value
    executor = MultiThreadedExecutor(num_threads=int(queue_size) + 4)
    executor.add_node(node)
    spinner = Spinner(executor)
    reason = 'crash'
    try:
        node.autostart()
        spinner.start()
        reason = wait_for_stop(node, spinner, stop)
    except BaseException as exc:  # noqa: BLE001 - reported as the exit code
        spinner.error = spinner.error or exc
        spinner.error_text = spinner.error_text or traceback.format_exc()
    logger = node.get_logger()
    logger.info(f'shutting down ({reason})')
    try:
        if not node.finalized.is_set():
            # Services stay up (and the executor spins) until every call got its answer.
            node._teardown_io(drain_timeout_s=5.0 if spinner.is_alive() else 0.5)
            node._release()
    except BaseException:  # noqa: BLE001 - still shut down, but never exit 0
        spinner.error = spinner.error or RuntimeError('teardown failed')
        spinner.error_text += traceback.format_exc()
    executor.shutdown(timeout_sec=2.0)
    rclpy.try_shutdown()  # wakes a spin still waiting, so its thread can be joined
    if spinner.is_alive():
        spinner.join(2.0)
    if spinner.error is not None:
        logger.fatal(f'the node crashed: {spinner.error!r}\n{spinner.error_text}')
    node.destroy_node()
    return EXIT_CRASH if spinner.error is not None else EXIT_OK
