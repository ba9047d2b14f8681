"""Known circuits as regression tests: TOML spec files, ``check(spec)`` and ``assert_circuit``.

- :mod:`~headscope.circuits.spec`: the spec format, its parser and the method registry;
- :mod:`~headscope.circuits.methods`: the analyses a check can name (registered on import);
- :mod:`~headscope.circuits.check`: running specs, reports, the pytest helper;
- :mod:`~headscope.circuits.cli`: ``headscope circuits check SPEC...``.
"""

from headscope.circuits import methods  # noqa: F401 - registers the built-in methods
from headscope.circuits.check import CheckReport, CircuitReport, HeadCheck, assert_circuit, check, run_check
from headscope.circuits.spec import (
    METHODS,
    CheckSpec,
    CircuitSpec,
    Expectation,
    HeadSpec,
    find_specs,
    load_spec,
    register_method,
    spec_from_dict,
)

__all__ = [
    "METHODS",
    "CheckReport",
    "CheckSpec",
    "CircuitReport",
    "CircuitSpec",
    "Expectation",
    "HeadCheck",
    "HeadSpec",
    "assert_circuit",
    "check",
    "find_specs",
    "load_spec",
    "register_method",
    "run_check",
    "spec_from_dict",
]
