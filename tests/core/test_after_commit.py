"""After-commit work: runs only on commit; network work can be moved off the caller's thread."""
import threading

import pytest


def test_after_commit_runs_after_commit_and_never_on_rollback(make_host):
    host = make_host()
    ran = []
    with host.transaction():
        host.after_commit(lambda: ran.append("committed"))
        with host.transaction():
            host.after_commit(lambda: ran.append("nested"))
        assert ran == []
    assert ran == ["committed", "nested"]
    with pytest.raises(RuntimeError):
        with host.transaction():
            host.after_commit(lambda: ran.append("rolled back"))
            raise RuntimeError("boom")
    assert ran == ["committed", "nested"]


def test_offloaded_network_work_runs_on_a_background_thread_and_close_waits_for_it(make_host):
    host = make_host()
    release = threading.Event()
    threads = []

    def slow_send():
        release.wait(5)
        threads.append(threading.current_thread().name)
    with host.offloading():
        with host.transaction():
            host.after_commit(slow_send, network=True)
            host.after_commit(lambda: threads.append("inline"))
    assert threads == ["inline"]           # the caller was not held up by slow_send
    release.set()
    host.close()                           # waits for the background work
    assert threads[1].startswith("postroom-bg")


def test_network_work_outside_offloading_runs_inline(make_host):
    host = make_host()
    threads = []
    with host.transaction():
        host.after_commit(lambda: threads.append(threading.current_thread().name), network=True)
    assert threads == [threading.current_thread().name]
