"""Summarise a mutation run (``make mutation`` / ``mutation-fast``): the score per module, every survivor's diff.

Reads the ``mutants/**/*.py.meta`` files mutmut writes, and ``tests/mutation/mutation_equivalents.toml`` for survivors
that were judged equivalent (a change that cannot alter any result; each entry says why). Writes Markdown to the path
given (default ``results/mutation/summary.md``). Run from the repository root, after ``mutmut run``.

    python tests/mutation/mutation_summary.py [out.md] [--label before|after]
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

# mutmut's exit codes (mutmut.stats.status_by_exit_code): 1 and 3 are kills, 0 a survivor
KILLED, SURVIVED, NOT_CHECKED = {1, 3}, {0}, {None}
NO_TESTS = {5, 33}
TIMEOUTS = {-24, 24, 36, 152, 255}


def status(exit_code: int | None) -> str:
    """The name of a mutant's outcome; a timeout counts as detected (the mutant made the tests hang)."""
    if exit_code in KILLED:
        return "killed"
    if exit_code in SURVIVED:
        return "survived"
    if exit_code in NOT_CHECKED:
        return "not checked"
    if exit_code in NO_TESTS:
        return "no tests"
    if exit_code in TIMEOUTS:
        return "timeout"
    return "other"


def load_results(root: Path) -> dict[str, dict[str, int | None]]:
    """{module path: {mutant name: exit code}} from mutmut's metadata files."""
    results = {}
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(root / "mutants"))[:-len(".meta")]
        results[module] = json.loads(meta.read_text())["exit_code_by_key"]
    return results


def load_equivalents(path: Path) -> dict[str, str]:
    """{mutant name: why it is equivalent}."""
    if not path.exists():
        return {}
    return {name: entry["why"] for name, entry in tomllib.loads(path.read_text()).get("equivalent", {}).items()}


def module_row(module: str, codes: dict[str, int | None], equivalents: dict[str, str]) -> tuple[str, float | None]:
    """One table row: counts by outcome and the score detected / (checked + no tests - equivalent): a mutant no
    selected test calls is not detected."""
    counts = Counter(status(code) for code in codes.values())
    equivalent = Counter(status(code) for name, code in codes.items()
                         if status(code) in ("survived", "no tests") and name in equivalents)
    counts["survived"] -= equivalent["survived"]
    counts["no tests"] -= equivalent["no tests"]
    equivalent = sum(equivalent.values())
    detected = counts["killed"] + counts["timeout"]
    checked = detected + counts["survived"] + counts["no tests"]
    score = detected / checked if checked else None
    score_txt = f"{100 * score:.0f}%" if score is not None else "-"
    raw_txt = f"{100 * detected / (checked + equivalent):.0f}%" if checked + equivalent else "-"
    row = (f"| `{module}` | {len(codes)} | {counts['not checked']} | {detected} | {counts['timeout']} | "
           f"{counts['survived']} | {equivalent} | {counts['no tests']} | {raw_txt} | {score_txt} |")
    return row, score


def survivor_section(name: str, equivalents: dict[str, str]) -> list[str]:
    """A survivor's diff (from mutmut) and, if judged equivalent, why."""
    from mutmut.__main__ import find_mutant, get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=find_mutant(name).path)
    verdict = f"equivalent: {equivalents[name]}" if name in equivalents else "**alive**: no test catches it"
    return [f"#### `{name}` ({verdict})", "```diff", diff.strip(), "```", ""]


def summary(root: Path, equivalents: dict[str, str], label: str, diffs: bool = True) -> str:
    results = load_results(root)
    lines = [f"# Mutation testing summary ({label})", "",
             "Score = (killed + timeout) / (killed + timeout + alive + no tests): equivalent survivors are left "
             "out (raw score: counted as alive). "
             "not-checked mutants were outside the run's time budget; no-tests mutants are in code no selected test "
             "calls (they count as alive).", "",
             "| module | mutants | not checked | killed (incl. timeouts) | timeouts | alive | equivalent | no tests | "
             "raw score | score |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    survivors = []
    for module, codes in results.items():
        row, _ = module_row(module, codes, equivalents)
        lines.append(row)
        survivors += [name for name, code in codes.items()
                      if status(code) == "survived" or (status(code) == "no tests" and name in equivalents)]
    lines += ["", f"## Surviving mutants ({len(survivors)})", ""]
    sys.path.insert(0, str(root))
    for name in survivors if diffs else []:
        lines += survivor_section(name, equivalents)
    if not diffs:
        lines += [f"- `{name}`" + (f": equivalent: {equivalents[name]}" if name in equivalents else "")
                  for name in survivors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="results/mutation/summary.md")
    parser.add_argument("--label", default="after")
    parser.add_argument("--equivalents", default="tests/mutation/mutation_equivalents.toml")
    parser.add_argument("--root", default=".", help="folder holding mutants/ (default: the current one)")
    parser.add_argument("--no-diffs", action="store_true", help="list survivors by name only (no mutated sources "
                        "needed, e.g. for a saved copy of the .meta files)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    text = summary(root, load_equivalents(Path.cwd() / args.equivalents), args.label, not args.no_diffs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text.split("## Surviving")[0])


if __name__ == "__main__":
    main()
