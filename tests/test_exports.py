"Every public name belongs to one module: `from fsml_nb.x import *` of two modules never shadows a name."
import importlib
import pkgutil
from collections import defaultdict

import fsml_nb


def public_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(fsml_nb.__path__) if not info.name.startswith("_"))


def test_every_module_has_an_all():
    missing = [name for name in public_modules() if not hasattr(importlib.import_module(f"fsml_nb.{name}"), "__all__")]
    assert missing == [], f"modules without __all__: {missing}"


def test_no_two_modules_export_the_same_name():
    owners: dict[str, list[str]] = defaultdict(list)
    for name in public_modules():
        for exported in importlib.import_module(f"fsml_nb.{name}").__all__:
            owners[exported].append(name)
    shared = {name: modules for name, modules in sorted(owners.items()) if len(modules) > 1}
    assert shared == {}, f"names exported by more than one module (rename one, or keep it out of __all__): {shared}"
