"""Polling helper for the system tests (imported by them; not a test module)."""

import time


def wait_for(predicate, timeout, what, state=lambda: ""):
    """Return once ``predicate()`` is true; fail the test after ``timeout`` s, naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} {state()}".rstrip())
