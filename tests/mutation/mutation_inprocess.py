"""Run mutmut's mutants inside one pytest session (a pytest plugin), for machines where mutmut's fork-per-mutant
runner is too slow (2 shared cores: ~1-2 mutants a minute there).

mutmut (``mutmut run``) generates the mutants under ``mutants/``; its trampolines pick the active mutant from
``MUTANT_UNDER_TEST`` on every call, and in its ``stats`` mode record which mutated functions a test calls. This
plugin runs each selected test once in ``stats`` mode, then again under each not-yet-killed mutant of the functions
that run called; a failure (or a run over ``MUTATION_TIMEOUT_S`` seconds) kills the mutant. Verdicts are written into mutmut's
``*.py.meta`` files, so ``mutmut results`` / ``mutmut show`` and ``tests/mutation/mutation_summary.py`` read them.

    cd mutants && MUTATION_TARGETS='workbench.alignment.ceiling.*' python -m pytest -p mutation_inprocess \\
        -m "not slow" -q tests/test_x.py          # with PYTHONPATH=../tests/mutation

Mutants share the process, so a mutant that corrupts module state could affect the next; mutmut's own runner
(``make mutation``) isolates them and is the reference when in doubt.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import time
from pathlib import Path

import pytest

KILLED, SURVIVED, NO_TESTS, TIMEOUT = 1, 0, 33, 36


class MutantTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise MutantTimeout()


def _function_of(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def _all_mutants() -> dict[Path, dict[str, int | None]]:
    return {meta: json.loads(meta.read_text())["exit_code_by_key"] for meta in Path("workbench").rglob("*.py.meta")}


class InProcessMutation:
    """Collects verdicts while pytest runs the tests; writes them when the session ends."""

    def __init__(self, targets: list[str], timeout_s: float):
        self.metas = _all_mutants()
        self.targets = sorted(m for codes in self.metas.values() for m in codes
                              if any(fnmatch.fnmatch(m, t) for t in targets))
        self.verdict: dict[str, int] = {}
        self.timeout_s = timeout_s
        self.started = time.time()
        self.write_verdicts(undecided=None)   # a run cut short leaves its undecided mutants "not checked"

    def mutants_for(self, called: set[str]) -> list[str]:
        return [m for m in self.targets if self.verdict.get(m) not in (KILLED, TIMEOUT) and _function_of(m) in called]

    def run_mutant(self, item, mutant: str) -> None:
        os.environ["MUTANT_UNDER_TEST"] = mutant
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            item.runtest()
            self.verdict.setdefault(mutant, SURVIVED)
        except MutantTimeout:
            self.verdict[mutant] = TIMEOUT
        except BaseException as err:  # noqa: BLE001 - any failure of the test under a mutant kills it
            if isinstance(err, KeyboardInterrupt):
                raise
            self.verdict[mutant] = KILLED
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            os.environ["MUTANT_UNDER_TEST"] = ""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        from mutmut.state import state

        state()._stats.clear()
        os.environ["MUTANT_UNDER_TEST"] = "stats"   # the unmutated code, recording the mutated functions it calls
        outcome = yield
        os.environ["MUTANT_UNDER_TEST"] = ""
        called = set(state()._stats)
        if outcome.excinfo is not None:   # the clean test fails: its verdicts would mean nothing
            return
        mutants = self.mutants_for(called)
        for mutant in mutants:
            self.run_mutant(item, mutant)
        if mutants:
            self.write_verdicts(undecided=None)

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
            meta.write_text(json.dumps(data, indent=4))

    def pytest_sessionfinish(self, session):
        self.write_verdicts(undecided=NO_TESTS)
        counts = {code: list(self.verdict.values()).count(code) for code in (KILLED, SURVIVED, TIMEOUT)}
        print(f"\nin-process mutation: {len(self.targets)} mutants, killed {counts[KILLED]}, timeout "
              f"{counts[TIMEOUT]}, survived {counts[SURVIVED]}, no tests "
              f"{len(self.targets) - len(self.verdict)} in {time.time() - self.started:.0f} s")


def pytest_configure(config):
    targets = [t for t in os.environ.get("MUTATION_TARGETS", "").split(",") if t]
    if targets:
        timeout_s = float(os.environ.get("MUTATION_TIMEOUT_S", "60"))
        config.pluginmanager.register(InProcessMutation(targets, timeout_s), "mutation_inprocess_runner")


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
