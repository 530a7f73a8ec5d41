"""tfscale.quiet: TensorFlow's start-up noise is dropped, every other line of stderr arrives, even after a crash."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap

import pytest

import procs
from tfscale import quiet

# Lines TF 2.21 / LiteRT printed on a healthy CPU-only run of `tfscale demo` and the notebooks.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796003543.857860    6418 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796003552.509259    6418 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796003686.599359    9209 local_rendezvous.cc:432] Local rendezvous recv item cancelled. Key hash: 1",
    "W0000 00:00:1796003694.051571    9056 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
KEPT = [
    "E0000 00:00:1796003552.509259    6418 collective_ops.cc:12] a real error from a collective",
    "F0000 00:00:1796003552.509259    6418 check.cc:1] Check failed: x == y",
    "WARNING: something a program says itself",
    "INFO: a user's own line",
    "tfscale demo on Scale(default: 1 replica(s)): one process",
    "Traceback (most recent call last):",
]


@pytest.mark.parametrize("line", NOISE)
def test_known_start_up_and_converter_lines_are_noise(line):
    assert quiet.is_noise(line) and quiet.is_noise(line.encode() + b"\n")


@pytest.mark.parametrize("line", KEPT)
def test_real_errors_and_everyone_elses_lines_are_kept(line):
    assert not quiet.is_noise(line)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in procs.base_env().items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environ, capture_output=True,
                          text=True, timeout=60)


WRITER = f"""
    import os, sys, time
    from tfscale import quiet
    quiet.enable()
    for line in {NOISE + KEPT!r}:
        os.write(2, (line + "\\n").encode())   # native writes, as TensorFlow's C++ code does
    print("python's own stderr", file=sys.stderr)
    os.write(2, b"a prompt> ")
    time.sleep(0.3)
    os.write(2, b"answered\\n")
    print("TF_CPP_MIN_LOG_LEVEL=" + os.environ["TF_CPP_MIN_LOG_LEVEL"])
"""


def test_enable_drops_noise_and_passes_everything_else_in_order():
    done = _run(WRITER)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert not [line for line in lines if quiet.is_noise(line)]
    assert [line for line in lines if line in KEPT] == KEPT
    assert "python's own stderr" in lines and "a prompt> answered" in lines
    assert "TF_CPP_MIN_LOG_LEVEL=2" in done.stdout


def test_verbose_shows_everything():
    done = _run(WRITER, TFSCALE_VERBOSE="1")
    assert done.returncode == 0, done.stderr
    assert all(line in done.stderr.splitlines() for line in NOISE + KEPT)
    assert "TF_CPP_MIN_LOG_LEVEL=0" in done.stdout


def test_nothing_is_lost_when_the_process_dies_or_a_child_writes():
    code = """
        import os, subprocess, sys
        from tfscale import quiet
        quiet.enable()
        subprocess.run([sys.executable, "-c", "import os; os.write(2, b'%s\\\\nchild line\\\\n')"], check=True)
        os.write(2, b"last words before a hard exit\\n")
        os._exit(3)
    """ % NOISE[1]
    done = _run(code)
    assert done.returncode == 3
    assert done.stderr.splitlines() == ["child line", "last words before a hard exit"]


def test_stderr_stays_a_terminal_for_python():
    """Progress bars and colour check sys.stderr.isatty(): enable keeps Python's stderr on the real terminal."""
    main, child = pty.openpty()
    environ = {k: v for k, v in procs.base_env().items() if k != quiet.VERBOSE_ENV}
    code = "import sys; from tfscale import quiet; quiet.enable(); print(sys.stderr.isatty(), flush=True)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=environ, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=child, text=True)
    os.close(child)
    out, _ = proc.communicate(timeout=60)
    os.close(main)
    assert out.strip() == "True"


def test_quiet_imports_only_the_standard_library():
    done = _run("import sys, tfscale.quiet; print(sorted(m for m in sys.modules if m.split('.')[0] in "
                "('tensorflow', 'keras', 'numpy', 'absl', 'tqdm')))")
    assert done.stdout.strip() == "[]", done.stderr


def test_quiet_variables_pass_quiet_or_verbose_on(monkeypatch):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert quiet.variables() == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    assert quiet.variables() == {quiet.VERBOSE_ENV: "1"}
