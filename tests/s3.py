"""An S3 server for tests: moto's EMULATOR of S3, run as a real process on 127.0.0.1.

No cloud is reachable from the test machines: tests of object-store checkpoints talk to moto's server
(the `moto[server]` test dependency), which speaks S3's HTTP protocol to s3fs/botocore as AWS would. It
accepts any access keys (credentials must be absent for a "no credentials" error), keeps everything in
memory and serves only 127.0.0.1 (or the host given to `s3_server_argv`, e.g. inside a network namespace).

    with s3_server() as s3:
        s3.make_bucket("ckpt")
        monkeypatch.setenv(...) for each item of s3.env, then Store("s3://ckpt/run")
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from procs import free_ports

# No proxy between the tests and a server on this machine, whatever the environment says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def s3_server_argv(host: str, port: int) -> list[str]:
    """The command line of moto's S3 server on host:port (to start it elsewhere, e.g. in a namespace host)."""
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str   # http://127.0.0.1:PORT
    env: dict       # what a client process needs: AWS_ENDPOINT_URL and test keys

    def make_bucket(self, name: str) -> None:
        """Creates the bucket `name` (a signed request, with the test keys of `env`)."""
        import boto3  # a dependency of moto

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=name)


@contextlib.contextmanager
def s3_server(*, host: str = "127.0.0.1", timeout: float = 60, server_env: dict | None = None):
    """Starts moto's S3 server on a free port of `host`, yields an `S3Server`, and always stops it.

    Args:
        host: the address it listens on.
        timeout: seconds to wait for its first answer.
        server_env: extra variables for the server process (e.g. moto's INITIAL_NO_AUTH_ACTION_COUNT).
    """
    port = free_ports(1)[0]
    endpoint = f"http://{host}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(server_env or {})
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(s3_server_argv(host, port), env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            _wait_until_up(proc, endpoint, timeout, log)
            yield S3Server(endpoint=endpoint, env={
                "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1"})
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_until_up(proc: subprocess.Popen, endpoint: str, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"moto's S3 server exited with {proc.returncode}:\n{output}")
        try:
            with _OPENER.open(endpoint + "/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (an error status is an answer)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto's S3 server did not answer on {endpoint} within {timeout:.0f} s") from None
            time.sleep(0.1)
