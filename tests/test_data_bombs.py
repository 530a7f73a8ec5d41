"""Decompression bombs (a PNG claiming 100,000 x 100,000 pixels, a JPEG claiming 65,000 x 65,000), alone and beside
47 good images, in an image folder and through `tfscale data convert`: refused by name in raise mode, counted and
named in skip mode, never decoded. The reading process caps its address space (6 GiB), so a bomb that reaches a
decoder or a tensor of its claimed size fails fast instead of passing slowly (tests/workers/image_bombs.py)."""

import json

import pytest

import procs

TOO_LARGE = "image too large (its header claims over 178,956,970 pixels)"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    done = procs.run_one([str(procs.REPO / "tests" / "workers" / "image_bombs.py"),
                          str(tmp_path_factory.mktemp("bombs")), "6"], timeout=400)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case, bomb, good", [("png_alone", "bomb.png", 0), ("png_among", "bomb.png", 47),
                                              ("jpeg_among", "bomb.jpg", 47)])
def test_a_bomb_is_refused_by_name_in_raise_mode_and_counted_and_named_in_skip_mode(results, case, bomb, good):
    got = results[case]
    print(case, got)
    assert got["raised"] is not None and TOO_LARGE in got["raised"] and bomb in got["raised"], got["raised"]
    assert got["images"] == good  # every good image arrives
    assert got["skipped"] == {TOO_LARGE: 1}
    assert any(bomb in line for line in got["named"]), got["named"]
    assert got["convert_raised"] is not None and bomb in got["convert_raised"], got["convert_raised"]
    assert got["convert"] == {"records": good, "skipped": 1}
    assert got["shard_images"] == good
