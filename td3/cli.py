"""The shell shared by the ``python -m td3.<command>`` entry points.

Each command is a Hydra app over the config tree in ``conf/``. A ``TD3Error`` (bad data,
impossible config, divergence, missing checkpoint) is printed as a single line
``td3: error: ...`` on stderr and the process exits with status 2; any other exception is
a bug and keeps Hydra's traceback report.

The command line's overrides are checked before Hydra runs the command, in the same form:
an unknown key or group option (with the known options), a malformed override, and a value
of the wrong type for its setting (text where the default is a number or a boolean, a
fraction where it is an integer), rather than Hydra's multi-line report or a TypeError deep
in a run.
"""
from __future__ import annotations

import logging
import sys
from functools import wraps
from pathlib import Path
from typing import Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from . import stop
from .config import CONF_DIR
from .errors import TD3Error

EXIT_USER_ERROR = 2


def fail(message: str) -> None:
    print(f"td3: error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


#: Command-line flags of Hydra's own (help, config printing, multirun): no pre-check then.
_HYDRA_FLAGS = ("-", )


def _is_group(key: str) -> bool:
    return (Path(CONF_DIR) / key).is_dir()


def override_problem(config_name: str, overrides: list[str]) -> str | None:
    """What is wrong with command-line ``overrides`` of ``conf/<config_name>.yaml``, in one
    line, or None. Composes the config as the command will (and once more with only the
    overrides that pick config groups, to know each setting's default type)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        return f"cannot parse the override(s) {' '.join(overrides)}: {str(exc).splitlines()[0]}"
    groups = [o.input_line for o in parsed if _is_group(o.get_key_element().lstrip("+~"))]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
            base = compose(config_name, overrides=groups)
    except MissingConfigException as exc:
        first = str(exc).splitlines()[0]
        missing = first.split("Could not find '", 1)[-1].rstrip("'")
        group, _, option = missing.rpartition("/")
        known = f"; known: {', '.join(exc.options)}" if getattr(exc, "options", None) else ""
        return f"unknown {group} {option!r}{known}" if group else first
    except ConfigCompositionException as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if lines and lines[0].startswith("Could not override"):
            key = lines[0].split("'")[1]
            return f"unknown setting {key!r} (not in the config; a new key is added with +{key}=...)"
        return "; ".join(lines[:2])
    from omegaconf import OmegaConf

    for o in parsed:
        key = o.get_key_element()
        if key.startswith(("+", "~")) or _is_group(key) or o.is_sweep_override():
            continue
        default = OmegaConf.select(base, key, default=None)
        value = OmegaConf.select(cfg, key, default=None)
        expected = _expected_type(default)
        if expected and not _fits(value, expected):
            return f"{key}={o.get_value_element_as_str()!r}: expected {expected} (its default is {default!r})"
    return None


def _expected_type(default) -> str | None:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    return None


def _fits(value, expected: str) -> bool:
    if value is None:  # null: a setting's "unset", checked by the command itself
        return True
    if expected == "true or false":
        return isinstance(value, bool)
    if expected == "an integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def hydra_command(config_name: str) -> Callable[[Callable[[dict], object]], Callable[[], None]]:
    """Turn ``task(config: dict)`` into a Hydra ``main()`` reading ``conf/<config_name>.yaml``."""

    def wrap(task: Callable[[dict], object]) -> Callable[[], None]:
        @wraps(task)
        def run(cfg: DictConfig):
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            try:
                config = OmegaConf.to_container(cfg, resolve=True)
            except Exception as exc:  # an interpolation that cannot resolve is the user's config
                fail(f"config does not resolve: {exc}")
            try:
                with stop.handlers():
                    return task(config)
            except stop.Stopped as exc:
                print(f"td3: {exc}", file=sys.stderr, flush=True)
                sys.exit(128 + exc.signum)
            except TD3Error as exc:
                fail(str(exc))
            except OSError as exc:  # a results or data directory that cannot be written
                if exc.filename is None:
                    raise
                fail(f"cannot write {exc.filename}: {exc.strerror or exc} (is TD3_RESULTS_DIR / TD3_DATA_DIR "
                     f"a writable directory with free space?)")

        app = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(run)

        @wraps(task)
        def main() -> None:
            args = sys.argv[1:]
            if not any(a.startswith(_HYDRA_FLAGS) for a in args):
                problem = override_problem(config_name, args)
                if problem:
                    fail(problem)
            app()

        return main

    return wrap
