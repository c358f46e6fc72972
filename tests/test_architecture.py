"""The shape of the package, checked on its source: module-level imports run one way down the
layers (errors -> config -> data | models -> bench -> engine -> cli) and form no circle, and
nothing is imported inside a function except an optional package (one that may be absent)."""
import ast
import os

import vbench

PACKAGE_ROOT = os.path.dirname(vbench.__file__)
LAYERS = {"vbench": 0, "vbench.errors": 0, "vbench.config": 1, "vbench.data": 2, "vbench.models": 2,
          "vbench.bench": 3, "vbench.engine": 4, "vbench.cli": 5}
# Packages a function may import where it is used: each may be missing on a user's machine.
OPTIONAL = {"safetensors", "torchcodec", "torch.utils.tensorboard", "pynvml", "mlperf_logging", "triton",
            # vbench's Triton kernels and their op import triton at their top
            "vbench.models.layers.depthwise_triton", "vbench.models.layers.depthwise_op"}


PACKAGES = set()  # modules that are packages (their __init__.py), filled by modules()


def modules():
    """{module name: parsed source} of every module under vbench/ (a package under its own name)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE_ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE_ROOT))[:-3].replace(os.sep, ".")
                if name == "__init__.py":
                    rel = rel.removesuffix(".__init__")
                    PACKAGES.add(rel)
                with open(path) as f:
                    found[rel] = ast.parse(f.read(), path)
    return found


def imported(module, node):
    """Absolute names imported by an Import/ImportFrom `node` of `module`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: against the module's package (a package's own name for __init__)
        base = module.split(".")
        base = base[:len(base) - node.level + (module in PACKAGES)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module
    return [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]


def vbench_targets(module, node, known):
    """The vbench modules an import node refers to (a name imported from a package counts as the
    package unless it is a module itself); the module's own packages, always imported before
    it, are left out."""
    return {name for name in imported(module, node)
            if name in known and name != module and not module.startswith(name + ".")}


def top_level_imports(tree):
    """Import nodes run when the module is imported (module body, also inside if/try/with)."""
    found = []
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
    return found


def layer_of(module):
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        name = ".".join(parts[:size])
        if name in LAYERS:
            return name, LAYERS[name]
    raise AssertionError(f"{module} is in no layer")


def test_module_level_imports_run_down_the_layers_and_form_no_circle():
    found = modules()
    graph = {name: set() for name in found}
    wrong_way = []
    for module, tree in found.items():
        home, level = layer_of(module)
        for node in top_level_imports(tree):
            for target in vbench_targets(module, node, found):
                graph[module].add(target)
                target_home, target_level = layer_of(target)
                same_package = target_home == home or target_home in ("vbench", "vbench.errors")
                if target_level > level or (target_level == level and not same_package):
                    wrong_way.append(f"{module} imports {target}")
    assert not wrong_way, "imports against the layers: " + "; ".join(sorted(wrong_way))
    # a circle: a module that reaches itself through the import graph
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            node = stack.pop()
            if node == start:
                raise AssertionError(f"import circle through {start}")
            if node not in seen:
                seen.add(node)
                stack.extend(graph[node])


def test_nothing_but_an_optional_package_is_imported_inside_a_function():
    inside = []
    for module, tree in modules().items():
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [name for name in imported(module, node) if name != "vbench.models.layers"]
                    if not any(name == opt or name.startswith(opt + ".") for name in names for opt in OPTIONAL):
                        inside.append(f"{module}.{function.name}: {', '.join(names)}")
    assert not inside, "imports inside functions: " + "; ".join(sorted(inside))


def test_every_required_package_is_imported_by_vbench():
    setup_py = os.path.join(os.path.dirname(PACKAGE_ROOT), "setup.py")
    tree = ast.parse(open(setup_py).read())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    requires = next(ast.literal_eval(k.value) for k in call.keywords if k.arg == "install_requires")
    import_names = {"PyYAML": "yaml"}
    used = set()
    for tree in modules().values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                used.update(name.split(".")[0] for name in imported("", node))
    wanted = {import_names.get(name, name) for name in
              (requirement.split(">")[0].split("=")[0].split("<")[0].strip() for requirement in requires)}
    assert wanted - used == set(), f"required by setup.py but never imported: {sorted(wanted - used)}"
