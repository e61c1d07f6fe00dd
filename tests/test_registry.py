"""The name registry: entries, aliases, and the errors for unknown or repeated names."""

import pytest

from encircle.errors import ConfigError
from encircle.experiments import get_protocol, list_protocols, protocol_aliases
from encircle.registry import Registry


def test_aliases_resolve_to_the_entry_and_are_not_listed():
    things: Registry[int] = Registry("thing")
    things.add("one", 1, aliases=("uno", "eins"))
    things.add("two", 2)
    assert things.get("uno") == things.get("one") == 1 and things.canonical("eins") == "one"
    assert things.names() == ["one", "two"] and things.aliases("one") == ["eins", "uno"] and things.aliases("two") == []
    assert "uno" in things and "two" in things and "three" not in things
    with pytest.raises(ConfigError, match="unknown thing 'three'; expected one of one, two"):
        things.get("three")
    for name, aliases in [("uno", ()), ("three", ("two",)), ("four", ("eins",))]:
        with pytest.raises(ConfigError, match="registered twice"):
            things.add(name, 0, aliases=aliases)


def test_the_seed_names_are_aliases_of_the_protocols():
    aliases = {alias: name for name in list_protocols() for alias in protocol_aliases(name)}
    assert aliases == {
        "seed000": "mnist-vs-fashion",
        "seed001": "mchad-cifar10",
        "seed002": "ae-pretraining",
        "seed004": "cac-openset",
    }
    for alias, name in aliases.items():
        assert get_protocol(alias) is get_protocol(name) and get_protocol(alias).name == name
