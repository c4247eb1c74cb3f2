"""The base of every configuration model and the field types the models share."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return value


NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]


class _Model(BaseModel):
    """Base of every configuration model: unknown keys are errors, instances are immutable.

    A key written with no value (``key:`` or ``key: null``) means "use the default", so that commenting out
    every entry under a key leaves valid YAML.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data
