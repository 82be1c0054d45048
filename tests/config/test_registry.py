from __future__ import annotations

import sys
import textwrap

import pytest

from lmprune import registry
from lmprune.errors import LmpruneError, UnknownNameError
from lmprune.registry import DuplicateNameError, Registry


def make() -> Registry:
    reg = Registry("scorer", hint="See `lmprune ls`.")

    @reg.register("magnitude", help="weight norms")
    def magnitude():
        return "m"

    def taylor():
        """First-order Taylor importance.

        More text that is not the help.
        """

    reg.register("taylor", taylor)
    return reg


def test_register_as_decorator_and_as_call():
    reg = make()
    assert reg.get("magnitude")() == "m"
    assert reg.names() == ["magnitude", "taylor"] and list(reg) == reg.names()
    assert "taylor" in reg and "x" not in reg and len(reg) == 2
    assert [(name, help_text) for name, _, help_text in reg.items()] == [
        ("magnitude", "weight norms"), ("taylor", "First-order Taylor importance.")]
    assert reg.help("taylor") == "First-order Taylor importance."


def test_unknown_name_suggests_and_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        make().get("magnitdue")
    msg = str(info.value)
    assert msg == ("unknown scorer 'magnitdue'. Did you mean 'magnitude'? "
                   "Valid scorers: magnitude, taylor. See `lmprune ls`.")
    assert isinstance(info.value, LmpruneError)
    with pytest.raises(UnknownNameError, match="unknown scorer 'zzz'. Valid scorers"):
        make().get("zzz")


def test_duplicates():
    reg = make()
    obj = object()
    reg.register("x", obj)
    reg.register("x", obj)  # the same object again (a module imported twice): fine
    with pytest.raises(DuplicateNameError, match="scorer 'x' is already registered"):
        reg.register("x", object())
    with pytest.raises(DuplicateNameError):
        reg.register("magnitude")(lambda: None)
    replacement = object()
    reg.register("x", replacement, replace=True)
    assert reg.get("x") is replacement
    reg.unregister("x")
    assert "x" not in reg


@pytest.mark.parametrize("bad", ["", " x", None, 3])
def test_names_must_be_clean_strings(bad):
    with pytest.raises(ValueError):
        make().register(bad, object())


def test_load_builtin_methods_skips_an_absent_package(monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_METHOD_PACKAGES", ("lmprune._no_such_package",))
    monkeypatch.setattr(registry, "_loaded", set())
    assert registry.load_builtin_methods() is registry.METHODS


def _fake_package(tmp_path, monkeypatch, name, modules):
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, code in modules.items():
        (pkg / f"{mod}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "BUILTIN_METHOD_PACKAGES", (name,))
    monkeypatch.setattr(registry, "_loaded", set())
    monkeypatch.setattr(registry, "METHODS", Registry("method"))
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, key)


def test_load_builtin_methods_imports_every_public_module(tmp_path, monkeypatch):
    code = """
        from lmprune.registry import METHODS

        @METHODS.register("{0}")
        def method():
            '''The {0} method.'''
    """
    _fake_package(tmp_path, monkeypatch, "fake_methods_ok",
                  {"alpha": code.format("alpha"), "beta": code.format("beta"),
                   "_helper": "raise RuntimeError('private modules are not imported')"})
    methods = registry.load_builtin_methods()
    assert methods.names() == ["alpha", "beta"]
    assert methods.help("beta") == "The beta method."
    assert registry.load_builtin_methods().names() == ["alpha", "beta"]  # idempotent


def test_load_builtin_methods_propagates_errors_inside_the_package(tmp_path, monkeypatch):
    _fake_package(tmp_path, monkeypatch, "fake_methods_broken",
                  {"bad": "import a_module_that_does_not_exist_anywhere\n"})
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist_anywhere"):
        registry.load_builtin_methods()
