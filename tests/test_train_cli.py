"""`tfscale train run.toml [--set k=v]`: a run file trains; its mistakes are errors naming the key."""

import re
import textwrap

import pytest

from tfscale.cli import main

MODELS = '''
import keras
import numpy as np

def build(width=4):
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(2)])

def not_a_model():
    return 42

def data():
    x = np.random.RandomState(0).rand(64, 3).astype("float32")
    return x, (x[:, 0] > 0.5).astype("int32")
'''

RUN = '''
{top}
strategy = "default"

[data]
train = "mymodels:data"
validation = "mymodels:data"

[train]
epochs = 1
global_batch_size = 16
loss = "sparse_categorical_crossentropy"
metrics = ["accuracy"]
verbose = 0
{extra}
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)

    def write(extra="", top='model = "mymodels:build"\nmodel_args = { width = 5 }'):
        text = RUN.format(extra=extra, top=top)
        (tmp_path / "run.toml").write_text(textwrap.dedent(text))
        return str(tmp_path / "run.toml")

    return write


def test_run_file_trains_with_overrides(project, capsys):
    assert main(["train", project(), "--set", "train.epochs=2", "--set", "train.base_lr=0.01"]) == 0
    out = capsys.readouterr().out
    assert "trained under Scale(default" in out and "precision float32" in out
    assert "val_accuracy" in out and "batch 16 (16 per replica, 16 per update)" in out
    # the overrides took effect: the run file's epochs = 1 and default base_lr (0.001) are replaced
    assert "peak learning rate 0.01, " in out, out
    assert re.search(r"^epoch 2: ", out, re.M) and not re.search(r"^epoch [13]: ", out, re.M), out


@pytest.mark.parametrize("extra, top, message", [
    ("epoch = 3", 'model = "mymodels:build"', "unknown key 'train.epoch'.*did you mean 'epochs'"),
    ('per_replica_batch_size = "16"', 'model = "mymodels:build"',
     "'train.per_replica_batch_size' must be a whole number"),
    ("", 'model = "mymodel:build"', "module 'mymodel' cannot be imported"),
    ("", 'model = "mymodels:not_a_model"', "mymodels:not_a_model returned int, not a Keras model"),
    ("", 'model = "mymodels:build"\nmodel_args = { depth = 2 }', "rejected its arguments"),
])
def test_run_file_mistakes_name_the_key(project, capsys, extra, top, message):
    assert main(["train", project(extra, top)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfscale train: ")
    assert re.search(message, err), err
