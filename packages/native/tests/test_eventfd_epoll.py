"""eventfd and epoll wrappers against the real kernel."""

from __future__ import annotations

import os
import threading

import pytest

from keel.native import epoll
from keel.native.epoll import Epoll
from keel.native.errors import ClosedResourceError
from keel.native.eventfd import EventFd


def test_eventfd_counts_and_blocks_when_empty() -> None:
    with EventFd(nonblocking=True) as counter:
        counter.write(3)
        counter.write(4)
        assert counter.read() == 7
        with pytest.raises(BlockingIOError, match="Resource temporarily unavailable"):
            counter.read()
        with pytest.raises(ValueError, match="value must be in"):
            counter.write(0)


def test_epoll_reports_readiness_with_the_registered_token() -> None:
    with Epoll() as poller, EventFd(nonblocking=True) as counter:
        poller.register(counter, epoll.IN, data=0xFEED)
        assert poller.wait(0) == 0
        threading.Timer(0.01, counter.write).start()
        assert poller.wait(5000) == 1
        data, events = poller.event(0)
        assert data == 0xFEED and events & epoll.IN
        counter.read()
        poller.unregister(counter)


def test_epoll_errors_name_the_operation() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        with Epoll() as poller:
            with pytest.raises(FileNotFoundError, match=r"epoll_ctl.*EPOLL_CTL_DEL"):
                poller.unregister(read_end)
            with pytest.raises(IndexError):
                poller.event(0)
    finally:
        os.close(read_end)
    poller = Epoll()
    poller.close()
    with pytest.raises(ClosedResourceError):
        poller.wait(0)
