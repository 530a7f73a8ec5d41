"""Fetches the 4,200 human-rated tweets of Hutto & Gilbert (ICWSM 2014) into a local cache.

The tweets ship inside the source distribution of vaderSentiment 3.3.2 (MIT
licence), in additional_resources/hutto_ICWSM_2014.tar.gz. This script asks
pip for that sdist, takes the one file it needs out of the two archives and
writes it as ``<cache>/tweets_GroundTruth.txt`` (id, mean rating, text; tab
separated). Nothing is committed to the repository.

Usage:
    python examples/sentiment/fetch_data.py [--cache DIR]

The cache defaults to $TFSCALE_CACHE/sentiment, or ~/.cache/tfscale/sentiment:
fetched once per machine, then read from there by train.py, stream.py and the
tests. When PyPI cannot be reached, `fetch` raises `FetchError` saying so and
how to place the file by hand.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE, VERSION = "vadersentiment", "3.3.2"
SDIST = f"vaderSentiment-{VERSION}.tar.gz"
INNER = f"vaderSentiment-{VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/tweets_GroundTruth.txt"
FILENAME = "tweets_GroundTruth.txt"
EXPECTED_LINES = 4200
PIP_TIMEOUT_S = 30  # per connection attempt; pip's default retries 5 times at 15 s


class FetchError(RuntimeError):
    """The tweets could not be fetched: what went wrong, where, and how to fix it, in one message."""


def default_cache() -> Path:
    """$TFSCALE_CACHE/sentiment, or ~/.cache/tfscale/sentiment."""
    root = os.environ.get("TFSCALE_CACHE") or Path.home() / ".cache" / "tfscale"
    return Path(root) / "sentiment"


def _download_sdist(into: Path, cache: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet",
           "--timeout", str(PIP_TIMEOUT_S), "--retries", "1", f"{PACKAGE}=={VERSION}", "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("*.tar.gz"))
    if done.returncode != 0 or not found:
        last = "\n".join(done.stderr.strip().splitlines()[-3:]) or "(pip printed nothing)"
        raise FetchError(f"the labelled tweets could not be fetched: `pip download {PACKAGE}=={VERSION}` failed "
                         f"(exit code {done.returncode}); pip said:\n{last}\n"
                         f"Where: {cache / FILENAME} (the cache) is missing.\n"
                         f"Fix: make PyPI (or a configured pip index) reachable and rerun "
                         f"`python examples/sentiment/fetch_data.py`, or copy {MEMBER} from the "
                         f"vaderSentiment {VERSION} sdist to {cache / FILENAME}.")
    return found[0]


def _extract_tweets(sdist: Path) -> bytes:
    with tarfile.open(sdist, "r:gz") as outer:
        inner_bytes = outer.extractfile(INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        return inner.extractfile(MEMBER).read()


def fetch(cache: str | os.PathLike | None = None) -> Path:
    """Returns the path of the tweets file, downloading it first if the cache lacks it.

    Args:
        cache: folder to keep the file in (default: `default_cache()`).

    Returns:
        Path of ``tweets_GroundTruth.txt`` inside the cache.

    Raises:
        FetchError: pip could not download the sdist, or it held something unexpected.
    """
    cache = Path(cache) if cache else default_cache()
    target = cache / FILENAME
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        data = _extract_tweets(_download_sdist(Path(tmp), cache))
        lines = data.decode("utf-8").splitlines()
        if len(lines) != EXPECTED_LINES:
            raise FetchError(f"expected {EXPECTED_LINES} tweets in {MEMBER} of {SDIST}, found {len(lines)}; "
                             f"nothing was written to {target}")
        partial = Path(tmp) / FILENAME
        partial.write_bytes(data)
        os.replace(partial, target)  # atomic: a failed run leaves no half file
    return target


def fetch_or_exit(cache: str | os.PathLike | None = None) -> Path:
    """`fetch`, for scripts: a `FetchError` ends the program with its message instead of a traceback."""
    try:
        return fetch(cache)
    except FetchError as e:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {e}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None,
                        help="folder for the data (default: $TFSCALE_CACHE/sentiment, or ~/.cache/tfscale/sentiment)")
    args = parser.parse_args(argv)
    print(fetch_or_exit(args.cache))


if __name__ == "__main__":
    main()
