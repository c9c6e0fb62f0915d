"""Validation errors people can act on: pydantic's errors as ``dotted.path: problem`` lines,
with a did-you-mean for unknown keys (``imagee`` -> ``image``). Bottom layer: used by the
config, the sandbox settings and the tools' settings alike."""

from __future__ import annotations

import difflib
from collections.abc import Collection

from pydantic import BaseModel, ValidationError


def did_you_mean(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe_errors(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: str = "",
    *,
    tags: Collection[str] = (),
    aliases: Collection[str] = (),
) -> str:
    """pydantic's errors as ``prefix+key: problem`` lines, with a did-you-mean for unknown keys.
    ``tags``: discriminator values pydantic puts first in a location (dropped); ``aliases``:
    other accepted top-level names, offered in the did-you-mean too."""
    lines: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in tags:
            loc = loc[1:]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden" and loc:
            choices = set(model_at(model, loc[:-1]).model_fields)
            if len(loc) == 1:
                choices.update(aliases)
            lines.append(f"{prefix}{key}: unknown key{did_you_mean(loc[-1], sorted(choices))}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if msg.startswith("invalid ") and "\n" in msg:  # a nested validator's own report
                lines.append(msg.split("\n", 1)[1].strip())
            else:
                where = f"{prefix}{key}" if key else prefix.rstrip(".")
                lines.append(f"{where}: {msg}" if where else msg)
    return "\n  ".join(lines)


def model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    """The nested model a location points into (``llm`` -> LLMSettings), for did-you-mean."""
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            break
    return model


__all__ = ["describe_errors", "did_you_mean", "model_at"]
