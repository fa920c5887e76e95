"""Running the repo's scripts from the tests.

As a user runs them: `python SCRIPT --preset tiny ...` in a subprocess (run; start + finish to run independent ones
side by side), one torch thread per process, no progress bars. On a busy 2-core machine two OpenMP threads make
these tiny models ~100x slower.

Or, for the checks of a one-line error, in this process (run_in_process): the script's main(argv), given back as the
interpreter would give it back (exit status, stdout, stderr with any warning or traceback), which saves starting
an interpreter and importing torch (~2 s) per check. test_flags.py checks that both ways print the same.
"""
import contextlib
import importlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# no progress bars: on a terminal they are cleared before an error line, in a pipe they would stay
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
TIMEOUT = 300


def command(script, args, preset):
    return [sys.executable, script, "--preset", preset, *args]


def check_success(script, result):
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def run(script, *args, check=True, preset="tiny"):
    result = subprocess.run(command(script, args, preset), cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=TIMEOUT)
    if check:
        check_success(script, result)
    return result


def start(script, *args, preset="tiny"):
    """The run of `run`, started and left running: finish() waits for it. Runs that read the same checkpoints and
    write different files go side by side on the two cores."""
    return subprocess.Popen(command(script, args, preset), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(*processes, check=True):
    """Wait for started runs; their CompletedProcess results (each checked to succeed unless check=False)."""
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:  # a timeout or an interrupt: leave nothing running
                process.kill()
                process.wait()
    if check:
        for result in results:
            check_success(result.args[1], result)
    return results


def run_together(*commands, check=True):
    """Several independent runs at once: each command a (script, *args) tuple on the tiny preset."""
    return finish(*[start(*c) for c in commands], check=check)


# --- in this process ------------------------------------------------------------------------------------------------

# the warnings a fresh interpreter hides (Python's default filters); any other is shown, every time
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@contextlib.contextmanager
def captured_output():
    """stdout and stderr of this process, at the file-descriptor level (what C++ writes too) and sys.stdout/stderr
    on top of them, into two temporary files; yields a dict that holds their text once the block ends."""
    texts = {}
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved_fds = [os.dup(1), os.dup(2)]
        saved_streams = sys.stdout, sys.stderr
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        try:
            yield texts
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            for name, f in (("stdout", out), ("stderr", err)):
                f.seek(0)
                texts[name] = f.read().decode(errors="replace")


def exit_status(code):
    """What the interpreter makes of SystemExit(code): its status, and the text it prints to stderr."""
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code, ""
    return 1, f"{code}\n"


def run_in_process(script, *args, check=True, preset="tiny"):
    """`python SCRIPT --preset PRESET ARGS` as SCRIPT's main(argv) in this process, from the repo root, with
    sys.argv as the interpreter would set it (argparse names the script by it). Returns a CompletedProcess as `run`
    does: the exit status (SystemExit's, or 1 after an uncaught exception), stdout, and stderr with SystemExit's
    message, the traceback of an uncaught exception and every warning not hidden by a fresh interpreter."""
    argv = ["--preset", preset, *args]
    module = importlib.import_module(os.path.splitext(script)[0])
    saved_argv, saved_cwd, saved_sigterm = sys.argv, os.getcwd(), signal.getsignal(signal.SIGTERM)
    sys.argv = [script, *argv]
    os.chdir(REPO)
    try:
        with captured_output() as texts, warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            warnings.simplefilter("always")
            for category in HIDDEN_WARNINGS:
                warnings.filterwarnings("ignore", category=category)
            try:
                module.main(argv)
                status, message = 0, ""
            except SystemExit as e:
                status, message = exit_status(e.code)
            except KeyboardInterrupt:
                raise
            except BaseException:
                status, message = 1, traceback.format_exc()
            sys.stderr.write(message)
            for w in caught:
                sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        signal.signal(signal.SIGTERM, saved_sigterm)  # the training scripts' main sets its own
    result = subprocess.CompletedProcess([script, *argv], status, texts["stdout"], texts["stderr"])
    if check:
        check_success(script, result)
    return result


# --- what the tests check -------------------------------------------------------------------------------------------

def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def dirs_of(root):
    """The --set flags that put a run's checkpoints under root/ck and its figures under root/res (with no run
    folder below them: `tiny`'s own would be ck/tiny/)."""
    return ["--set", f"checkpoint_dir={root / 'ck'}", "--set", f"results_dir={root / 'res'}", "--set", "run="]


def copy_run(source, root):
    """A trained run's folders (ck/ and res/) into root, where a test may change them."""
    for folder in ("ck", "res"):
        shutil.copytree(source / folder, root / folder, dirs_exist_ok=True)


EDIT_IMAGES, EDIT_SAMPLES = 3, 2  # the edit grids of conftest.py's `priors`: test images, results per image
