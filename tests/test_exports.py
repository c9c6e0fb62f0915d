from __future__ import annotations

import orchestrator
from orchestrator import exceptions


def test_all_is_exactly_the_public_names() -> None:
    public = {n for n in dir(orchestrator) if not n.startswith("_")} - {
        "exceptions",
        "sandbox",
        "cli",
    }
    assert set(orchestrator.__all__) - {"__version__"} == public


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


def test_tools_all_is_exactly_the_public_names() -> None:
    import tools

    public = {n for n in dir(tools) if not n.startswith("_")} - {
        "base",
        "bash",
        "calculator",
        "editor",
        "registry",
        "search",
        "submit",
    }
    assert set(tools.__all__) == public
