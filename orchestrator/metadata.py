"""Typed fields that a record's JSON keeps inside its ``metadata`` (records layer).

``Trajectory.patch/token_ledger/save_error`` and ``Task.swe_row`` are typed pydantic fields,
and the records' ``metadata`` holds the user's own keys only. The previous versions kept those
values in ``metadata`` (``"patch"``, ``"tokens"``, ``"save_error"``, ``"swe"``), so the JSON
keeps them there, byte for byte where they were: :class:`TypedMetadataModel` lifts the keys
out of ``metadata`` when a record is loaded or built, and its serializer puts them back after
the key that preceded them (a value set in memory goes where the previous versions appended
it: after the keys present at that moment).

Documented behaviour for code that still reads or writes such a key through ``metadata``
(``traj.metadata["patch"]``, ``.get``, ``in``, ``.pop``, ``.setdefault``, ``.update``): it
reads or writes the typed field (:class:`TypedMetadata`), never the user's dict; iteration,
``len`` and ``==`` see the user's keys only. A record given both spellings at once (``patch=``
and ``metadata={"patch": ...}``) is refused.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from typing_extensions import Self


class TypedMetadata(dict[str, Any]):
    """A record's ``metadata``: the user's keys; its typed keys read and write the record's
    typed fields (see the module's docstring)."""

    def __init__(self, values: Any = (), owner: TypedMetadataModel | None = None) -> None:
        super().__init__()
        self._owner = None if owner is None else weakref.ref(owner)
        self._fields = {} if owner is None else owner.field_of_key()
        self.update(values)

    def belongs_to(self, owner: TypedMetadataModel) -> bool:
        return self._owner is not None and self._owner() is owner

    def _record(self, key: str) -> TypedMetadataModel:
        owner = self._owner() if self._owner is not None else None
        if owner is None:
            raise KeyError(f"{key!r} is a typed field of its record ({self._fields[key]})")
        return owner

    def __getitem__(self, key: str) -> Any:
        if key in self._fields:
            value = getattr(self._record(key), self._fields[key])
            if value is None:
                raise KeyError(key)
            return value
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._fields:
            setattr(self._record(key), self._fields[key], value)
        else:
            super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        if key in self._fields:
            if self.get(key) is None:
                raise KeyError(key)
            setattr(self._record(key), self._fields[key], None)
        else:
            super().__delitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and key in self._fields:
            return self.get(key) is not None
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def pop(self, key: str, *default: Any) -> Any:
        if key in self._fields:
            value = self.get(key)
            if value is None:
                if default:
                    return default[0]
                raise KeyError(key)
            del self[key]
            return value
        return super().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def copy(self) -> dict[str, Any]:
        return dict(self)

    def __reduce__(self) -> Any:  # pickled as the plain dict of the user's keys
        return (dict, (dict(self),))


class TypedMetadataModel(BaseModel):
    """A record with typed fields that its JSON keeps inside ``metadata``: a subclass declares
    them in ``TYPED_METADATA`` (field name -> key in the JSON's ``metadata``) and has a
    ``metadata: dict[str, Any]`` field."""

    TYPED_METADATA: ClassVar[dict[str, str]] = {}

    #: where each typed field goes in the JSON's ``metadata``: after this key (None: first),
    #: as the previous versions wrote it (so the JSON stays byte for byte the same)
    _after: dict[str, str | None] = PrivateAttr(default_factory=dict)

    @classmethod
    def field_of_key(cls) -> dict[str, str]:
        return {key: name for name, key in cls.TYPED_METADATA.items()}

    @model_validator(mode="wrap")
    @classmethod
    def _lift_typed_metadata(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        after: dict[str, str | None] = {}
        if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
            fields = cls.field_of_key()
            data = dict(data)
            metadata: dict[str, Any] = {}
            previous: str | None = None
            for key, value in data["metadata"].items():
                if key in fields and value is not None:
                    name = fields[key]
                    if data.get(name) is not None:
                        raise ValueError(f"metadata.{key} and {name} are the same field: give one")
                    data[name] = value
                    after[name] = previous
                elif key not in fields:
                    metadata[key] = value
                previous = key
            data["metadata"] = metadata
        record = handler(data)
        if after:
            record._after = after
        record._bind_metadata()
        return record

    def _bind_metadata(self) -> None:
        current = self.__dict__["metadata"]
        if not (isinstance(current, TypedMetadata) and current.belongs_to(self)):
            self.__dict__["metadata"] = TypedMetadata(dict.items(current), owner=self)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.TYPED_METADATA:
            if value is None:
                self._after.pop(name, None)
            elif getattr(self, name) is None:  # appended to the metadata of the moment
                keys = list(self.json_metadata())
                self._after[name] = keys[-1] if keys else None
        super().__setattr__(name, value)
        if name == "metadata":
            self._bind_metadata()

    def json_metadata(self) -> dict[str, Any]:
        """``metadata`` as the JSON holds it: the user's keys, the typed fields placed back
        where the previous versions wrote them."""
        out = dict(dict.items(self.__dict__["metadata"]))
        for name, anchor in self._after.items():
            value = getattr(self, name)
            if value is None:
                continue
            items = list(out.items())
            at = (
                0
                if anchor is None
                else (list(out).index(anchor) + 1 if anchor in out else len(out))
            )
            items.insert(at, (self.TYPED_METADATA[name], value))
            out = dict(items)
        for name, key in self.TYPED_METADATA.items():  # set without a recorded place: at the end
            value = getattr(self, name)
            if value is not None and key not in out:
                out[key] = value
        return out

    @model_serializer(mode="wrap")
    def _typed_into_metadata(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        for name in self.TYPED_METADATA:
            data.pop(name, None)
        if "metadata" in data:
            own = data["metadata"]
            typed = self.field_of_key()
            # the user's keys as the handler serialised them, the typed ones in their place
            data["metadata"] = {
                key: own.get(key, value)
                for key, value in self.json_metadata().items()
                if key in own or key in typed
            }
        return data

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        copied._bind_metadata()
        return copied

    def __copy__(self) -> Self:
        copied = super().__copy__()
        copied._bind_metadata()
        return copied

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        copied = super().__deepcopy__(memo)
        copied._bind_metadata()
        return copied

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._bind_metadata()
