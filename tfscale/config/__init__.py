"""Configuration: frozen dataclasses, TOML presets (shipped ones in presets/) and ``--set key=value`` overrides.

Every config is a frozen dataclass validated in ``__post_init__``, one module per
area (strategy, run/train, tune). Run files of `tfscale train` and `tfscale tune` share one loader and
its rules (runfile.py). Files and overrides go through `from_mapping`
(loading.py), which rejects unknown keys (suggesting the closest known one) and
values of the wrong type, naming the file and the key.
"""

from tfscale.config.loading import (apply_overrides, check_choice, from_mapping, load_toml, parse_override,
                                    with_options)
from tfscale.config.run import (LR_SCALINGS, PRECISIONS, DataConfig, ExportConfig, RunConfig, RunFile, TrainConfig,
                                load_run_config)
from tfscale.config.strategy import (CLUSTER_MANAGERS, COMMUNICATIONS, LAUNCH_VARIABLES, StrategyConfig, engine_options,
                                     find_preset, load_strategy_preset, preset_names, with_launch_environment)
from tfscale.config.tune import TUNERS, TuneConfig, TuneRunConfig, load_tune_run_config

__all__ = ["CLUSTER_MANAGERS", "COMMUNICATIONS", "LAUNCH_VARIABLES", "LR_SCALINGS", "PRECISIONS", "TUNERS",
           "DataConfig", "ExportConfig", "RunConfig", "RunFile", "StrategyConfig", "TrainConfig", "TuneConfig",
           "TuneRunConfig",
           "apply_overrides", "engine_options", "check_choice", "find_preset", "from_mapping", "load_run_config",
           "load_strategy_preset", "load_toml", "load_tune_run_config", "parse_override", "preset_names",
           "with_launch_environment", "with_options"]
