"""The public options parser: cacheframe.backends.options.parse_options."""

from __future__ import annotations

import pytest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from cacheframe.backends import options
from cacheframe.exceptions import ConfigurationError


class Lenient(BaseModel):
    """A plugin's model that forgot extra='forbid' (pydantic's default ignores unknown names)."""

    timeout: float = Field(0.25, gt=0)


class Allowing(BaseModel):
    """A model that accepts extra names on purpose."""

    model_config = ConfigDict(extra="allow")

    timeout: float = 0.25


class Aliased(BaseModel):
    """A field reached by an alias in the query string."""

    pool: int = Field(1, alias="pool_size")


@pytest.mark.parametrize("model", [Lenient, Allowing])
def test_unknown_option_rejected_whatever_the_model(model: type[BaseModel]) -> None:
    """A misspelt option is an error naming it and the known ones, whatever the model's extra setting."""
    with pytest.raises(ConfigurationError, match=r"unknown option 'timout'.*known options: timeout"):
        options.parse_options("mine://h?timout=1", model)


def test_known_options_and_aliases_parse() -> None:
    """Known names and aliases validate over the defaults."""
    assert options.parse_options("mine://h?timeout=0.5", Lenient, {"timeout": 2}).timeout == 0.5
    assert options.parse_options("mine://h", Lenient, {"timeout": 2}).timeout == 2
    assert options.parse_options("mine://h?pool_size=3", Aliased).pool == 3


def test_password_redacted_in_errors() -> None:
    """The error quotes the URL without its password."""
    with pytest.raises(ConfigurationError) as info:
        options.parse_options("mine://u:s3cret@h?nope=1", Lenient)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_parser_is_public() -> None:
    """parse_options lives in a public module (the private path still works for old imports)."""
    from cacheframe.backends import _options

    assert options.__all__ == ["parse_options"]
    assert _options.parse_options is options.parse_options


def test_password_like_query_options_redacted() -> None:
    """An option carrying a credential (sentinel_password, token) is quoted as *** in errors."""
    with pytest.raises(ConfigurationError) as info:
        options.parse_options("mine://h?sentinel_password=s3cret&token=t0k&nope=1", Lenient)
    assert "s3cret" not in str(info.value) and "t0k" not in str(info.value)
    assert "sentinel_password=***" in str(info.value)


def test_field_name_behind_an_alias_is_rejected() -> None:
    """?pool=3 on a model reached by alias pool_size would be ignored by pydantic: it is an error."""
    with pytest.raises(ConfigurationError, match="unknown option 'pool'.*known options: pool_size"):
        options.parse_options("mine://h?pool=3", Aliased)


def test_alias_choices_and_populate_by_name_are_accepted() -> None:
    """Every name the model itself validates under is accepted: AliasChoices, populate_by_name."""

    class Choices(BaseModel):
        pool: int = Field(1, validation_alias=AliasChoices("pool_size", "size"))

    class ByName(BaseModel):
        model_config = ConfigDict(populate_by_name=True)
        pool: int = Field(1, alias="pool_size")

    assert options.parse_options("mine://h?size=4", Choices).pool == 4
    assert options.parse_options("mine://h?pool_size=5", Choices).pool == 5
    assert options.parse_options("mine://h?pool=6", ByName).pool == 6
