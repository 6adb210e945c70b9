#!/usr/bin/env python
"""Prove that the test suite kills the one-line mutations of issue 23, item 6.

Each entry of :data:`MUTATIONS` (``scripts/mutations.json``) names a source file, a snippet of it that must occur exactly once, the one-line
change that breaks it and the tests that must then fail. The check works on a private copy of the repository (the
shared tree is never touched, whoever else is editing it):

1. copy the repository to a temporary folder: the files ``git ls-files`` lists (tracked and untracked, not ignored)
   from the working tree, or with ``--rev REV`` the tree of a commit (``git archive``) with the test files that the
   table names taken from the working tree (to test new tests against committed code while the package is mid-edit);
2. baseline: run the named tests (``--suite``: the whole suite) on the unmutated copy, once for all mutations;
3. per mutation: check that the snippet occurs exactly once (else the entry is *stale*), apply the change in the copy,
   run the tests again and put the file back. A mutation is *killed* when a test that passed in the baseline fails.

pytest runs in the copy (working directory and first entry of ``PYTHONPATH``) with a small plugin that checks, before
any test runs, that ``infnet_monai`` is imported from the copy and not from the shared tree (the editable install).
Shared data is found as the tests find it from the original checkout (``$INFNET_SHARED_DATA`` or ``../shared/data``).

Prints one JSON document on stdout (per mutation: ``status`` -- ``killed``, ``survived``, ``stale``,
``baseline_failed`` or ``error`` --, ``killed``, ``seconds``, ``tests_run``, the tests named and the tests that failed)
and exits 1 when any mutation is not killed.

Usage::

    python scripts/mutation_check.py                     # all mutations, their named tests
    python scripts/mutation_check.py --only a b c e      # some of them
    python scripts/mutation_check.py --rev HEAD          # against the last commit's package
    python scripts/mutation_check.py --suite             # the whole suite per mutation (slow)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("mutation_check")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    """One one-line mutation: ``original`` (exactly once in ``file``) becomes ``mutated``; ``tests`` must kill it."""

    name: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    what: str = ""


MUTATIONS_FILE = Path(__file__).with_name("mutations.json")
"""The table, one entry per mutation (``name``, ``what``, ``file``, ``original``, ``mutated``, ``tests``); edit the
snippets when the code they point at moves. ``original`` must occur exactly once in ``file`` (a longer snippet
disambiguates); the change should be one line and meaningful."""
MUTATIONS: tuple[Mutation, ...] = tuple(
    Mutation(**{**entry, "tests": tuple(entry["tests"])}) for entry in json.loads(MUTATIONS_FILE.read_text(encoding="utf-8"))
)

PACKAGE = "infnet_monai"
DEFAULT_TIMEOUT_S = 1800

_PROBE_PLUGIN = '''
"""pytest plugin of scripts/mutation_check.py: the package under test must come from the copy."""
import os

import pytest


def pytest_configure(config):
    import {package}

    root = os.path.realpath(os.environ["MUTATION_CHECK_ROOT"])
    found = os.path.realpath({package}.__file__)
    with open(os.environ["MUTATION_CHECK_PROBE"], "w", encoding="utf-8") as f:
        f.write(found)
    if not found.startswith(root + os.sep):
        raise pytest.UsageError(f"{package} imported from {{found}}, not from the copy under {{root}}")
'''


# ------------------------------------------------------------------------------------------------------ the copy
def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True).stdout


def _copy_working_tree(dest: Path) -> int:
    """Copy the files ``git ls-files`` lists (tracked, and untracked but not ignored) from the working tree."""
    names = [n for n in _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").decode().split("\0") if n]
    copied = 0
    for name in dict.fromkeys(names):
        src = REPO / name
        if not (src.is_file() or src.is_symlink()):  # deleted in the working tree, or a submodule
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
        copied += 1
    return copied


def _copy_revision(dest: Path, rev: str, overlay: list[str]) -> int:
    """Extract the tree of ``rev`` (``git archive``), then copy the ``overlay`` files from the working tree."""
    with tempfile.TemporaryFile() as tar_file:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True, stdout=tar_file)
        tar_file.seek(0)
        with tarfile.open(fileobj=tar_file) as tar:
            members = tar.getmembers()
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse paths outside dest
                tar.extractall(dest, filter="data")
            else:
                tar.extractall(dest)
    for name in overlay:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return len(members)


def _test_files(mutations) -> list[str]:
    """The test files the table names, with the ``conftest.py`` files above them."""
    files: dict[str, None] = {}
    for m in mutations:
        for test in m.tests:
            path = Path(test.split("::")[0])
            for parent in reversed(path.parents[:-1]):
                files[str(parent / "conftest.py")] = None
            files[str(path)] = None
    return [f for f in files if (REPO / f).is_file()]


def _shared_data_dir() -> str | None:
    """Where the tests of the original checkout find the shared data (tests/conftest.py's rule)."""
    env = os.environ.get("INFNET_SHARED_DATA")
    if env:
        return env
    d = (REPO / ".." / "shared" / "data").resolve()
    return str(d) if d.is_dir() else None


# ------------------------------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    """One pytest run: per test id ``passed`` / ``failed`` / ``skipped``."""

    rc: int
    seconds: float
    tests: dict[str, str]
    imported_from: str
    tail: str

    @property
    def run(self) -> int:
        return sum(1 for v in self.tests.values() if v != "skipped")

    def with_status(self, status: str) -> list[str]:
        return [t for t, v in self.tests.items() if v == status]

    def passed(self, named: str) -> bool:
        """Whether the test ``named`` (all its parametrised cases) ran and passed."""
        found = [v for t, v in self.tests.items() if t == named or t.startswith(named + "[")]
        return bool(found) and all(v == "passed" for v in found)


def _node_id(case: ET.Element, root: Path) -> str:
    """pytest node id of a junit ``testcase`` (``tests/x/test_y.py::[Class::]name``); a collection error has no
    classname and keeps its name (the module)."""
    classname, name = case.get("classname", ""), case.get("name", "")
    if not classname:
        return name
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):  # the module is the longest dotted prefix that is a file
        module = Path(*parts[:cut]).with_suffix(".py")
        if (root / module).is_file():
            return "::".join([module.as_posix(), *parts[cut:], name])
    return f"{classname}::{name}"


def _parse_junit(path: Path, root: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        status = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
        node = _node_id(case, root)
        if out.get(node) != "failed":  # a test failing in setup or teardown stays failed
            out[node] = status
    return out


def _pytest(copy: Path, probe_dir: Path, targets: list[str], timeout_s: int, label: str) -> Outcome:
    junit = probe_dir / f"junit-{label}.xml"
    probe = probe_dir / f"probe-{label}.txt"
    for f in (junit, probe):
        f.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), str(probe_dir), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a restored file must never be read from a stale cache
    env["MUTATION_CHECK_ROOT"] = str(copy)
    env["MUTATION_CHECK_PROBE"] = str(probe)
    data = _shared_data_dir()
    if data:
        env["INFNET_SHARED_DATA"] = data
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-p", "_mutation_check_probe",
        "--continue-on-collection-errors", f"--junitxml={junit}", "-o", "junit_family=xunit2", *targets,
    ]
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s)
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = -1, f"timed out after {timeout_s} s\n{(e.stdout or b'')[-3000:]!r}"
    seconds = round(time.time() - start, 2)
    imported = probe.read_text(encoding="utf-8") if probe.is_file() else ""
    return Outcome(rc, seconds, _parse_junit(junit, copy), imported, text[-3000:])


def _stale_reason(copy: Path, m: Mutation) -> str | None:
    """Why the entry cannot be applied (``None`` when it can)."""
    path = copy / m.file
    if not path.is_file():
        return f"{m.file} does not exist; point the entry at the file that now holds the code."
    n = path.read_text(encoding="utf-8").count(m.original)
    if n == 1:
        return None
    if n > 1:
        return f"the original text occurs {n} times in {m.file}; lengthen the snippet so that it is unique."
    elsewhere = sorted(
        str(p.relative_to(copy)) for p in (copy / PACKAGE).rglob("*.py") if m.original in p.read_text(encoding="utf-8")
    )
    hint = f" It is now in: {', '.join(elsewhere)}." if elsewhere else " It occurs nowhere else in the package either."
    return f"the original text no longer occurs in {m.file} (the code changed or moved); update the entry.{hint}"


def _check(copy: Path, probe_dir: Path, m: Mutation, targets: list[str], baseline: Outcome | None, timeout_s: int) -> dict:
    result: dict = {"name": m.name, "what": m.what, "file": m.file, "tests": list(m.tests)}
    stale = _stale_reason(copy, m)
    if stale:
        logger.warning("%s: stale: %s", m.name, stale)
        return {**result, "status": "stale", "killed": False, "seconds": 0.0, "tests_run": 0, "message": stale}
    path = copy / m.file
    source = path.read_text(encoding="utf-8")
    try:
        path.write_text(source.replace(m.original, m.mutated, 1), encoding="utf-8")
        logger.info("%s: mutated %s; running %d target(s)", m.name, m.file, len(targets))
        outcome = _pytest(copy, probe_dir, targets, timeout_s, m.name)
    finally:
        path.write_text(source, encoding="utf-8")
    failed = outcome.with_status("failed")
    result.update(seconds=outcome.seconds, tests_run=outcome.run, failed=failed, pytest_rc=outcome.rc)
    if not outcome.imported_from.startswith(str(copy.resolve())):
        message = f"{PACKAGE} was not imported from the copy ({outcome.imported_from or 'no probe'}); nothing proven."
        return {**result, "status": "error", "killed": False, "message": message, "output_tail": outcome.tail}
    if outcome.rc not in (0, 1) and not outcome.tests:
        return {**result, "status": "error", "killed": False, "message": f"pytest exit code {outcome.rc}", "output_tail": outcome.tail}
    if baseline is None:
        killed = outcome.rc != 0 and bool(failed)
        newly = failed
        not_passing = []
    else:
        passing = set(baseline.with_status("passed"))
        newly = [t for t in failed if t in passing]
        killed = bool(newly)
        named = m.tests if targets != ["tests"] else []
        not_passing = [t for t in named if not baseline.passed(t)]
    result["killed_by"] = newly
    if killed:
        status = "killed"
    elif not_passing:
        status = "baseline_failed"
        result["message"] = (
            f"named test(s) not passing on the unmutated code: {not_passing}; on the mutant "
            f"{'they fail too' if set(not_passing) & set(failed) else 'they pass'}."
        )
    elif outcome.run == 0:
        status = "error"
        result["message"] = "no test ran (all skipped or not collected)."
    else:
        status = "survived"
    if status != "killed" and outcome.rc not in (0, 1):
        result["output_tail"] = outcome.tail
    return {**result, "status": status, "killed": killed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="mutations to check (default: all)")
    parser.add_argument("--suite", action="store_true", help="run the whole test suite per mutation, not the named tests")
    parser.add_argument("--rev", help="take the repository from this commit (git archive), with the named test files from the working tree")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unmutated copy (a failing test then counts as a kill)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is in the output)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)

    names = {m.name for m in MUTATIONS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; the table has {sorted(names)}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]

    work = Path(tempfile.mkdtemp(prefix="mutation_check."))
    copy, probe_dir = work / "repo", work / "probe"
    copy.mkdir()
    probe_dir.mkdir()
    (probe_dir / "_mutation_check_probe.py").write_text(_PROBE_PLUGIN.format(package=PACKAGE), encoding="utf-8")
    try:
        if args.rev:
            overlay = _test_files(chosen)
            n = _copy_revision(copy, args.rev, overlay)
            rev = _git("rev-parse", args.rev).decode().strip()
            source = f"git {args.rev} ({rev}), test files from the working tree: {overlay}"
        else:
            n = _copy_working_tree(copy)
            source = "working tree"
        logger.info("copied %d files (%s) to %s", n, source, copy)

        applicable = [m for m in chosen if _stale_reason(copy, m) is None]
        if args.suite:
            targets_of = {m.name: ["tests"] for m in chosen}
        else:
            targets_of = {m.name: list(m.tests) for m in chosen}
        baseline = None
        if not args.no_baseline and applicable:
            union = ["tests"] if args.suite else list(dict.fromkeys(t for m in applicable for t in m.tests))
            logger.info("baseline: %d target(s) on the unmutated copy", len(union))
            baseline = _pytest(copy, probe_dir, union, args.timeout, "baseline")
        results = [_check(copy, probe_dir, m, targets_of[m.name], baseline, args.timeout) for m in chosen]
        report = {
            "source": source,
            "mode": "suite" if args.suite else "named tests",
            "baseline": None if baseline is None else {
                "seconds": baseline.seconds,
                "tests_run": baseline.run,
                "not_passing": [t for t, v in baseline.tests.items() if v != "passed"],
                "imported_from": baseline.imported_from,
            },
            "mutations": results,
            "all_killed": all(r["killed"] for r in results),
        }
        if args.keep:
            report["copy"] = str(copy)
        print(json.dumps(report, indent=2))
        return 0 if report["all_killed"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
