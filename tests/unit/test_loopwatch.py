"""The event-loop watch logs every thread's stack when a replica's loop stops answering."""

from __future__ import annotations

import asyncio
import threading
import time

from serve.loopwatch import LoopWatch


def held_loop_for(watch: LoopWatch, seconds: float) -> None:
    """Run a loop in a thread with ``watch`` on it, hold it ``seconds`` once, then stop it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    watch.attach(loop)
    time.sleep(0.5)

    def hold_the_loop() -> None:
        time.sleep(seconds)

    loop.call_soon_threadsafe(hold_the_loop)
    time.sleep(seconds + 0.5)
    watch.stop()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_a_held_loop_gets_every_threads_stack_once(tmp_path):
    with open(tmp_path / "stacks.txt", "w+") as out:
        watch = LoopWatch(every_s=0.1, stall_s=0.4, out=out)
        held_loop_for(watch, 1.2)
        out.seek(0)
        stacks = out.read()
    assert watch.stalls == 1
    assert "in hold_the_loop" in stacks  # the call that holds the loop, in the loop thread's stack


def test_a_loop_that_answers_is_left_alone(tmp_path):
    with open(tmp_path / "stacks.txt", "w+") as out:
        watch = LoopWatch(every_s=0.1, stall_s=0.4, out=out)
        held_loop_for(watch, 0.1)
        out.seek(0)
        assert watch.stalls == 0 and out.read() == ""
