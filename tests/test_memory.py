"""Freed memory kept for the next training step: fewer page faults, glibc's defaults afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest

import devise.hardware as memory
from devise.hardware import freed_memory_kept

MEASURE = """
import resource, torch
from devise.hardware import freed_memory_kept

def page_faults_of_big_tensors(count=8, megabytes=64):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(count):
        torch.empty(megabytes * 2**20, dtype=torch.uint8).fill_(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = page_faults_of_big_tensors()
with freed_memory_kept():
    page_faults_of_big_tensors()  # the first step grows the heap
    inside = page_faults_of_big_tensors()  # later steps reuse it
print(outside, inside)
"""


@pytest.mark.skipif(memory.glibc() is None, reason="the switches exist only in glibc")
def test_inside_the_block_big_tensors_reuse_memory_instead_of_faulting_in_new_pages():
    # A fresh process: glibc's allocator cannot be put back as it was once a block has run here.
    result = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True)
    outside, inside = map(int, result.stdout.split())
    # outside, every 64 MB tensor is a fresh mmap of 16,384 pages, at every step
    assert outside > 8 * 16_000
    assert inside < outside / 3


def test_only_the_outermost_block_switches_and_it_restores_the_defaults(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "set_malloc", calls.append)
    with freed_memory_kept():
        with freed_memory_kept():
            pass
        assert calls == [memory.KEEP]
    assert calls == [memory.KEEP, memory.GLIBC_DEFAULTS]


def test_the_defaults_come_back_after_an_error(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "set_malloc", calls.append)
    with pytest.raises(ValueError), freed_memory_kept():
        raise ValueError("a failing epoch")
    assert calls == [memory.KEEP, memory.GLIBC_DEFAULTS]
