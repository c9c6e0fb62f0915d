from __future__ import annotations

import subprocess
import sys
import types

import orchestrator
from orchestrator import exceptions


def _public(module: types.ModuleType) -> set[str]:
    return {
        n
        for n in dir(module)
        if not n.startswith("_") and not isinstance(getattr(module, n), types.ModuleType)
    }


def test_all_is_exactly_the_public_names() -> None:
    assert set(orchestrator.__all__) - {"__version__"} == _public(orchestrator)


def test_tools_and_agents_all_are_exactly_the_public_names() -> None:
    import agents
    import tools

    assert set(tools.__all__) == _public(tools)
    assert set(agents.__all__) == _public(agents) - {"annotations", "importlib", "Any"}


def test_every_package_imports_first_without_cycles() -> None:
    for first in (
        "tools",
        "agents",
        "orchestrator",
        "agents.react",
        "tools.bash",
        "orchestrator.runner",
    ):
        out = subprocess.run(
            [sys.executable, "-c", f"import {first}; from orchestrator import AgenticRollout"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, f"import {first} first: {out.stderr[-500:]}"


def test_import_has_no_side_effects() -> None:
    code = (
        "import logging, sys, orchestrator, tools, agents; "
        "assert not logging.getLogger().handlers; "
        "assert 'docker' not in sys.modules and 'openai' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_one_exception_root() -> None:
    for name in dir(exceptions):
        obj = getattr(exceptions, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, BaseException)
            and obj.__module__ == exceptions.__name__
        ):
            assert issubclass(obj, exceptions.AgenticRolloutError), name


def test_remote_error_mapping_tolerates_garbage() -> None:
    err = exceptions.remote_error_from_wire({"type": "FileNotFound", "message": "m", "code": 1})
    assert isinstance(err, FileNotFoundError) and isinstance(err, exceptions.RemoteError)
    assert type(exceptions.remote_error_from_wire("junk")) is exceptions.RemoteError
    unknown = exceptions.remote_error_from_wire({"type": "Brand-New", "message": "x"})
    assert type(unknown) is exceptions.RemoteError and unknown.type == "Brand-New"
