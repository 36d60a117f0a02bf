"""Run mutmut's mutants from one pytest session (a pytest plugin), for machines where mutmut's process-per-mutant
runner is too slow (2 shared cores: ~1-2 mutants a minute there).

mutmut generates the mutants under ``mutants/`` (``python tests/mutation/mutation_inprocess.py``, as ``mutmut run``
does); its trampolines pick the active mutant from ``MUTANT_UNDER_TEST`` on every call, and in its ``stats`` mode
record which mutated functions a test calls. Before pytest runs each selected test, this plugin runs it once in
``stats`` mode, then under each not-yet-killed mutant of the functions that run called. Each of these runs is a
child forked from the pytest process after torch, numba and the test's fixtures are loaded (no re-import per
mutant), killed with SIGKILL after ``MUTATION_TIMEOUT_S`` seconds of wall clock: a mutant that loops inside compiled
code (numba, torch), where no Python signal handler runs, is recorded as a timeout (detected, as mutmut does). A
failing test, or a child that dies (a segfault in a kernel), kills the mutant. A child's changes to module state or
fixtures (monkeypatch in the test body) die with it, so runs cannot affect each other. Verdicts are written into
mutmut's ``*.py.meta`` files (``mutmut results`` / ``mutmut show`` and ``tests/mutation/mutation_summary.py`` read
them).

    cd mutants && MUTATION_TARGETS='workbench.alignment.ceiling.*' python -m pytest -p mutation_inprocess \\
        -m "not slow" -q tests/test_x.py          # with PYTHONPATH=../tests/mutation

Environment: ``MUTATION_TARGETS`` (comma-separated mutant-name globs), ``MUTATION_TIMEOUT_S`` (default 30),
``MUTATION_SAMPLE`` (at most this many mutants per module, a fixed random sample, seed ``MUTATION_SEED``, default 0;
the rest stay "not checked"). Mutants already killed (or timed out) in ``mutants/`` are not run again, so a run cut
short resumes and a rerun after adding tests checks only the survivors; generate the mutants again for a fresh run.
A test that fails in the clean (stats) child is skipped: its mutants' verdicts would mean nothing.
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import select
import signal
import time
from pathlib import Path

import pytest

KILLED, SURVIVED, NO_TESTS, TIMEOUT = 1, 0, 33, 36
DETECTED = (KILLED, TIMEOUT)


def _function_of(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def _all_mutants() -> dict[Path, dict[str, int | None]]:
    return {meta: json.loads(meta.read_text())["exit_code_by_key"] for meta in Path("workbench").rglob("*.py.meta")}


def _sampled(names: list[str], sample: int | None, seed: int) -> list[str]:
    if sample is None or len(names) <= sample:
        return names
    return sorted(random.Random(seed).sample(names, sample))


def _run_in_child(item, mutant: str, timeout_s: float) -> int:
    """Run ``item`` in a forked child under ``mutant`` ("" for the clean code); the verdict code. The parent waits on
    the child's pidfd, so the wall-clock limit holds whatever the child is doing."""
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        code = KILLED
        try:
            os.environ["MUTANT_UNDER_TEST"] = mutant
            item.runtest()
            code = SURVIVED
        except BaseException:  # noqa: BLE001 - any failure of the test under a mutant kills it
            code = KILLED
        finally:
            os._exit(code)
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return TIMEOUT
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    return SURVIVED if os.waitstatus_to_exitcode(status) == SURVIVED else KILLED


def _called_in_child(item, timeout_s: float) -> set[str] | None:
    """Run ``item`` clean in a forked child in mutmut's ``stats`` mode; the mutated functions it called, or None
    when the test fails or hangs there (its mutants' verdicts would mean nothing)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        os.close(read_end)
        called = None
        try:
            from mutmut.state import state

            state()._stats.clear()
            os.environ["MUTANT_UNDER_TEST"] = "stats"
            item.runtest()
            called = sorted(state()._stats)
        except BaseException:  # noqa: BLE001 - a failing clean test: no verdicts from it
            pass
        finally:
            try:
                os.write(write_end, json.dumps(called).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    os.waitpid(pid, 0)
    called = json.loads(b"".join(chunks) or b"null")
    return None if called is None else set(called)


class InProcessMutation:
    """Collects verdicts while pytest runs the tests; writes them as it goes and when the session ends."""

    def __init__(self, targets: list[str], timeout_s: float, sample: int | None, seed: int):
        self.metas = _all_mutants()
        self.targets = []
        self.verdict: dict[str, int] = {}
        for codes in self.metas.values():
            mine = sorted(m for m in codes if any(fnmatch.fnmatch(m, t) for t in targets))
            for mutant in _sampled(mine, sample, seed):
                self.targets.append(mutant)
                if codes[mutant] in DETECTED:   # killed by an earlier run: not run again
                    self.verdict[mutant] = codes[mutant]
        self.resumed = len(self.verdict)
        self.timeout_s = timeout_s
        self.started = time.time()
        self.write_verdicts(undecided=None)   # a run cut short leaves its undecided mutants "not checked"

    def mutants_for(self, called: set[str]) -> list[str]:
        return [m for m in self.targets if self.verdict.get(m) not in DETECTED and _function_of(m) in called]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        """Before pytest runs the test itself: a child runs it clean in ``stats`` mode (which mutated functions it
        calls), then one child per mutant. Every run is a child of the process as the test's setup left it, so what
        the test body changes (monkeypatch, module state) cannot leak from one run into the next."""
        called = _called_in_child(item, self.timeout_s)
        if called is None:
            print(f"\nmutation: {item.nodeid} fails (or hangs) when forked; no mutant is run on it")
        else:
            mutants = self.mutants_for(called)
            for mutant in mutants:
                code = _run_in_child(item, mutant, self.timeout_s)
                if code in DETECTED or mutant not in self.verdict:
                    self.verdict[mutant] = code
            if mutants:
                self.write_verdicts(undecided=None)
        yield

    def write_verdicts(self, undecided: int | None) -> None:
        """Verdicts so far into mutmut's metadata; ``undecided`` for target mutants without one."""
        targets = set(self.targets)
        for meta, codes in self.metas.items():
            mine = [m for m in codes if m in targets]
            if not mine:
                continue
            for mutant in mine:
                codes[mutant] = self.verdict.get(mutant, undecided)
            data = json.loads(meta.read_text())
            data["exit_code_by_key"] = codes
            tmp = meta.with_suffix(".meta.tmp")
            tmp.write_text(json.dumps(data, indent=4))
            tmp.replace(meta)

    def pytest_sessionfinish(self, session):
        self.write_verdicts(undecided=NO_TESTS)
        counts = {code: list(self.verdict.values()).count(code) for code in (KILLED, SURVIVED, TIMEOUT)}
        print(f"\nin-process mutation: {len(self.targets)} mutants ({self.resumed} killed before), killed "
              f"{counts[KILLED]}, timeout {counts[TIMEOUT]}, survived {counts[SURVIVED]}, no tests "
              f"{len(self.targets) - len(self.verdict)} in {time.time() - self.started:.0f} s")


def pytest_configure(config):
    targets = [t for t in os.environ.get("MUTATION_TARGETS", "").split(",") if t]
    if targets:
        import torch

        torch.set_num_threads(1)   # no OpenMP thread pool in the parent: forked children cannot use one
        timeout_s = float(os.environ.get("MUTATION_TIMEOUT_S", "30"))
        sample = int(os.environ["MUTATION_SAMPLE"]) if os.environ.get("MUTATION_SAMPLE") else None
        runner = InProcessMutation(targets, timeout_s, sample, int(os.environ.get("MUTATION_SEED", "0")))
        config.pluginmanager.register(runner, "mutation_inprocess_runner")


def generate() -> None:
    """Generate the mutants under ``mutants/`` as ``mutmut run`` does, without its stats run (mutmut 3.8 internals;
    this plugin records which functions each test calls itself)."""
    from mutmut.__main__ import (copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths,
                                 store_lines_covered_by_tests)
    from mutmut.mutation.trampoline import set_mutant_under_test

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    store_lines_covered_by_tests()
    print(create_mutants(os.cpu_count() or 2))


if __name__ == "__main__":
    generate()
