"""CPython's own tests of ``concurrent.futures`` process pools, run against
``parpool.ProcessPoolExecutor``.

Usage:

    python tests/cpython/run.py --tests DIR [--contexts spawn,fork,forkserver]
                                [--write REPORT.md]

DIR holds CPython's ``test_concurrent_futures.py`` for this interpreter's
version (Debian's ``libpython3.11-testsuite`` package has it for 3.11:
``apt-get download libpython3.11-testsuite && dpkg-deb -x *.deb X``, then
``X/usr/lib/python3.11/test``). The runner makes ``parpool``'s executor the
module's ``futures.ProcessPoolExecutor`` before the module loads, runs
every process-pool test, and compares each outcome with ``DIFFERENCES``
below: the behaviours parpool changes on purpose. It exits 1 if any other
test fails, or if one listed there passes (the list is then out of date),
and prints (or writes) a table of every test that did not pass, and why.
"""

import argparse
import concurrent.futures
import importlib
import os
import sys
import sysconfig
import time
import unittest

import parpool

# Test name (the method, for every start method) -> why parpool's outcome
# differs from CPython's. "On purpose" marks a behaviour parpool changes
# deliberately; "Not yet" one it lacks.
_LAZY = (
    "On purpose: every worker starts in the constructor (a failing initializer "
    "or worker is reported at once); CPython's spawn and forkserver contexts "
    "start workers on demand, which this test counts."
)
_ALONE = (
    "On purpose: the failure is this task's own exception and the pool goes on; "
    "CPython breaks the whole pool (BrokenProcessPool for every task and submit)."
)
DIFFERENCES = {
    "test_killed_child": (
        "On purpose: a killed worker fails only the task it ran (WorkerCrashed, "
        "a BrokenProcessPool); the other tasks complete and the executor takes "
        "new work, where CPython fails them all and refuses new work."
    ),
    "test_idle_process_reuse_one": _LAZY,
    "test_idle_process_reuse_multiple": _LAZY,
    "test_processes_terminate[spawn]": _LAZY,
    "test_processes_terminate[forkserver]": _LAZY,
    "test_error_at_task_unpickle": _ALONE + " Here: the task's UnpicklingError.",
    "test_exit_at_task_unpickle": _ALONE + " Here: SystemExit, and the worker lives.",
    "test_error_during_result_unpickle_in_result_handler": _ALONE
    + " Here: parpool.TaskError naming the unpickling error.",
    "test_exit_during_result_unpickle_in_result_handler": _ALONE
    + " Here: parpool.TaskError naming the SystemExit.",
    "test_max_tasks_per_child[fork]": (
        "On purpose, with the fork context only: CPython refuses "
        "max_tasks_per_child there (it cannot fork a replacement safely); "
        "parpool's workers are always fresh interpreters, so it works with any "
        "mp_context."
    ),
    "FailingInitializerTest.test_initializer[fork]": (
        "As CPython answers it for any spawned process: the test's "
        "multiprocessing.Queue, made in the fork context, cannot go to "
        "parpool's workers, which are always fresh interpreters (RuntimeError: "
        "'A SemLock created in a fork context is being shared with a process in "
        "a spawn context'). One made in the spawn or forkserver context goes, as "
        "to Process(args=...)."
    ),
    "FailingInitializerTest.test_initializer": (
        "On purpose: a failing initializer fails the constructor "
        "(InitializerFailed, naming the exception) where CPython breaks the pool "
        "later; the test's multiprocessing.Queue in initargs reaches the workers."
    ),
}


# Loaded at every interpreter start of this environment while the
# variable is set: in the runner, in its workers, and in the interpreters
# the tests start (`-I` ignores PYTHONPATH, not site-packages' .pth files).
HOOK = """\
import os
_tests = os.environ.get("PARPOOL_CPYTHON_TESTS")
if _tests:
    import test
    if _tests not in test.__path__:
        test.__path__.append(_tests)
    import concurrent.futures
    import parpool
    concurrent.futures.ProcessPoolExecutor = parpool.ProcessPoolExecutor
"""


def install_hook():
    """Puts the hook into this environment's site-packages (named to load
    after the .pth of an editable parpool install, which it imports);
    returns the files to remove after the run."""
    site_dir = sysconfig.get_paths()["purelib"]
    module = os.path.join(site_dir, "zz_parpool_cpython_hook.py")
    pth = os.path.join(site_dir, "zz_parpool_cpython_hook.pth")
    with open(module, "w") as f:
        f.write(HOOK)
    with open(pth, "w") as f:
        f.write("import zz_parpool_cpython_hook\n")
    return [module, pth]


def load(tests_dir):
    """Loads CPython's test module with parpool's executor in place."""
    os.environ["PARPOOL_CPYTHON_TESTS"] = os.path.abspath(tests_dir)
    importlib.import_module("zz_parpool_cpython_hook")
    assert concurrent.futures.ProcessPoolExecutor is parpool.ProcessPoolExecutor
    return importlib.import_module("test.test_concurrent_futures")


def process_tests(module, contexts):
    """The suite of the module's process-pool test cases, for `contexts`."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in sorted(dir(module)):
        case = getattr(module, name)
        if not (isinstance(case, type) and issubclass(case, unittest.TestCase)):
            continue
        if getattr(case, "executor_type", None) is not parpool.ProcessPoolExecutor:
            continue
        context = getattr(case, "ctx", None)
        if context not in contexts:
            continue
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite


class Record(unittest.TextTestResult):
    """Keeps every test's outcome and the first line of its reason."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}

    def _note(self, test, outcome, detail=""):
        self.outcomes[test.id()] = (outcome, detail)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._note(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, "fail", self._last_line(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._note(test, "error", self._last_line(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._note(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._note(test, "pass")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._note(test, "fail", "unexpected success")

    def _last_line(self, err, test):
        text = self._exc_info_to_string(err, test).strip().splitlines()
        return text[-1] if text else ""


def method(test_id):
    return test_id.rsplit(".", 1)[-1]


def context(test_id):
    case = test_id.rsplit(".", 2)[-2]
    for name in ("Forkserver", "Fork", "Spawn"):
        if name in case:
            return name.lower()
    return ""


def case(test_id):
    """The test case's name without the start method's part
    (`ProcessPoolSpawnFailingInitializerTest` -> `FailingInitializerTest`)."""
    name = test_id.rsplit(".", 2)[-2]
    for prefix in ("ProcessPoolForkserver", "ProcessPoolFork", "ProcessPoolSpawn"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def known(test_id):
    """Why this test's outcome differs, if it is listed: by
    `Case.test_name[start method]`, `Case.test_name`,
    `test_name[start method]`, or `test_name`."""
    name, ctx = method(test_id), context(test_id)
    whole = f"{case(test_id)}.{name}"
    for key in (f"{whole}[{ctx}]", whole, f"{name}[{ctx}]", name):
        if key in DIFFERENCES:
            return DIFFERENCES[key]
    return None


def report(outcomes):
    """The table of tests that did not pass, and the unexplained ones."""
    counts = {}
    for outcome, _ in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    lines = [
        "| test | outcome | why |",
        "|---|---|---|",
    ]
    unexplained = []
    for test_id, (outcome, detail) in sorted(outcomes.items()):
        reason = known(test_id)
        if outcome in ("pass", "skip") and reason is None:
            if outcome == "skip":
                lines.append(f"| `{test_id}` | skipped | {detail} |")
            continue
        if outcome == "pass":
            unexplained.append(f"{test_id}: passes, but is listed as a difference")
            continue
        if reason is None:
            unexplained.append(f"{test_id}: {outcome}: {detail}")
            lines.append(f"| `{test_id}` | {outcome} | **unexplained**: {detail} |")
        else:
            lines.append(f"| `{test_id}` | {outcome} | {reason} |")
    summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    return summary, lines, unexplained


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", required=True, help="the folder of test_concurrent_futures.py")
    parser.add_argument("--contexts", default="spawn,fork,forkserver")
    parser.add_argument("--write", help="also write the report (markdown) here")
    parser.add_argument("-k", dest="pattern", help="only tests whose id contains this")
    args = parser.parse_args()
    installed = install_hook()
    try:
        run(args)
    finally:
        for path in installed:
            os.remove(path)


def run(args):
    module = load(args.tests)
    suite = process_tests(module, set(args.contexts.split(",")))
    if args.pattern:
        suite = unittest.TestSuite(t for t in _flat(suite) if args.pattern in t.id())
    start = time.monotonic()
    runner = unittest.TextTestRunner(resultclass=Record, verbosity=1, stream=sys.stderr)
    result = runner.run(suite)
    took = time.monotonic() - start
    summary, lines, unexplained = report(result.outcomes)
    text = "\n".join(
        [
            f"CPython {sys.version.split()[0]}'s test_concurrent_futures, process-pool tests "
            f"({args.contexts}) against parpool.ProcessPoolExecutor: {summary} "
            f"({took:.0f} s).",
            "",
            *lines,
            "",
        ]
    )
    print(text)
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
    if unexplained:
        print("Unexplained outcomes:\n  " + "\n  ".join(unexplained), file=sys.stderr)
        sys.exit(1)


def _flat(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flat(t)
        else:
            yield t


if __name__ == "__main__":
    main()
