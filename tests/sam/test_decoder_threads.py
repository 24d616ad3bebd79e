"""The prompt decoder's CPU thread choice: the process's threads while a core is free, one when cores are busy."""

from __future__ import annotations

import os

from medseg.sam.protocol import decoder_cpu_threads


def test_explicit_settings_pass_through():
    assert decoder_cpu_threads(1) == 1 and decoder_cpu_threads(3) == 3 and decoder_cpu_threads(None) is None


def test_auto_follows_the_load(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 1.0, 1.0))  # our own process on one of two cores
    assert decoder_cpu_threads("auto") is None  # the process's torch threads
    monkeypatch.setattr(os, "getloadavg", lambda: (3.8, 4.0, 4.0))  # busy: a second thread would wait
    assert decoder_cpu_threads("auto") == 1

    def no_loadavg():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", no_loadavg)
    assert decoder_cpu_threads("auto") == 1
