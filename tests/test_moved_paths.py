"""Import paths of the flat layout before 0.2 still work, each with a DeprecationWarning naming the new path."""

from __future__ import annotations

import pickle

import pytest

import lightning_hypergrad
from lightning_hypergrad import _moved
from lightning_hypergrad.lightning.callback import HypergradientCallback
from tests.test_cli_config import CONFIG, build


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_every_old_module_forwards_its_names(old: str) -> None:
    import importlib

    module = importlib.import_module(old)
    targets = [importlib.import_module(target) for target in _moved.MOVED[old]]
    public = [name for target in targets for name in vars(target) if not name.startswith("_")]
    name = public[0]
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to lightning_hypergrad\.\w+(\.\w+)*\.{name}"):
        assert getattr(module, name) is next(getattr(t, name) for t in targets if hasattr(t, name))


def test_an_old_from_import_finds_the_moved_class() -> None:
    with pytest.warns(DeprecationWarning, match="lightning_hypergrad.lightning.callback.HypergradientCallback"):
        from lightning_hypergrad.callback import HypergradientCallback as old

    assert old is HypergradientCallback


def test_the_old_module_path_does_not_replace_the_hypergradient_function() -> None:
    with pytest.warns(DeprecationWarning):
        from lightning_hypergrad.hypergradient import HypergradientResult  # noqa: F401
    assert callable(lightning_hypergrad.hypergradient) and lightning_hypergrad.hypergradient.__name__ == "hypergradient"


def test_a_name_that_never_existed_names_the_new_modules() -> None:
    import lightning_hypergrad.safeguards as old

    with pytest.raises(AttributeError, match=r"lightning_hypergrad\.lightning\.decision"):
        old.no_such_function  # noqa: B018


def test_an_old_class_path_in_yaml_builds_the_same_callback(tmp_path) -> None:
    text = CONFIG.replace(
        "class_path: lightning_hypergrad.HypergradientCallback",
        "class_path: lightning_hypergrad.callback.HypergradientCallback",
    )
    assert text != CONFIG
    with pytest.warns(DeprecationWarning, match="lightning_hypergrad.lightning.callback"):
        cli = build(tmp_path, text)
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, HypergradientCallback)]
    assert callback.every_n_steps == 3 and callback.solver.iterations == 7


def test_an_object_pickled_under_an_old_path_unpickles() -> None:
    payload = pickle.dumps(HypergradientCallback, protocol=0)  # text opcodes: the path can be rewritten in place
    old_payload = payload.replace(b"lightning_hypergrad.lightning.callback", b"lightning_hypergrad.callback")
    with pytest.warns(DeprecationWarning):
        assert pickle.loads(old_payload) is HypergradientCallback
