"""Graph → Python source of an ``nn.Module``: the compiled layer and the exported file are the same text.

The generator emits one assignment per node, in topological order, with readable unique names; the
lowering pass (:mod:`evosearch.layers.lowering`) says where a fused kernel, a ReLU or an unguarded
division takes the place of the primitives. Batch moments track a running estimate of their
per-channel statistic (mean, biased variance, or mean of squares) in a buffer, updated with PyTorch's
momentum convention at the end of a training-mode forward and used in eval mode, as ``BatchNorm``
does. Proxy moments re-emit the element-wise sub-graph between ``y`` and ``a`` on Gaussian proxy
samples.

:func:`compile_layer` executes the source (registered with :mod:`linecache`, so a runtime error points
at the generated line); :func:`export_layer` writes it with a header, importing only torch and the
standard library, and the source of the runtime helpers it calls.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import inspect
import keyword
import linecache
import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

import primitives.functional as runtime
from evosearch.errors import EvosearchError, brief
from evosearch.files import atomic_write_text
from evosearch.layers.graph import AFFINE_NAMES, INPUT, LayerGraph, Leaf, Node, format_number
from evosearch.layers.lowering import Lowering, Normalization, lower
from primitives import Kind, Layout

_RUNTIME_NAMES = {
    name: obj
    for name, obj in vars(runtime).items()
    if not name.startswith("_") and (inspect.isfunction(obj) or name.isupper())
}
_TAKEN = {
    INPUT,
    "out",
    "self",
    "torch",
    "nn",
    "math",
    *_RUNTIME_NAMES,
    *dir(builtins),
    *keyword.kwlist,
}
_DOC_FORMULA_LINES = 12
_DOC_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:;()+\-*/=<>|\[\]{}'!?#%&@^~]")
# A leaf's value in the forward, over its name and attributes (x is the forward's argument). A
# per-channel vector broadcasts at dim 1 of an image, over the last dim of tokens.
_LEAF_CODE = {
    Leaf.SCALAR: "self.{name}.to(x.dtype)",
    Leaf.CONST: "x.new_tensor({value!r})",
    Leaf.HYPER: "x.new_tensor(float(self.{name}))",
}
_VECTOR_CODE = {Layout.IMAGE: "as_channel(self.{name}, x)", Layout.TOKENS: "as_feature(self.{name}, x)"}
# The per-channel statistic a batch moment tracks, over every axis but the channels'.
_STATISTIC_CALL = {Layout.IMAGE: "channel_statistic", Layout.TOKENS: "feature_statistic"}
# Parameter shapes: a vector has one value per channel; a scalar is shaped (1,), as DyT's alpha is.
_PARAMETER_SHAPE = {Leaf.VECTOR: "num_features", Leaf.SCALAR: "1"}


class _Namespace:
    """Unique, clean Python identifiers (in the spirit of torch.fx's namespace)."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def create(self, candidate: str) -> str:
        name = re.sub(r"\W", "_", candidate).strip("_") or "v"
        if name[0].isdigit():
            name = f"v_{name}"
        base, k = re.sub(r"_\d+$", "", name), 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name


@dataclass
class _Forward:
    """The forward body under construction."""

    graph: LayerGraph
    names: _Namespace = field(default_factory=lambda: _Namespace(_TAKEN))
    var: dict[str, str] = field(default_factory=lambda: {INPUT: INPUT})
    lines: list[str] = field(default_factory=list)
    tracked: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # → (var, buffer)
    proxies: dict[tuple[str, ...], str] = field(default_factory=dict)
    plan: Lowering | None = None


def class_name_for(graph: LayerGraph) -> str:
    """The layer's name in CamelCase: ``evonorm_b0`` → ``EvonormB0``."""
    parts = re.findall(r"[A-Za-z0-9]+", graph.name)
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Layer"
    return f"Layer{name}" if name[0].isdigit() else name


def check_class_name(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name) or name in _TAKEN or name.startswith("_"):
        raise EvosearchError(f"class name {brief(name)} is not a usable Python class name")
    return name


def buffer_names(graph: LayerGraph) -> dict[tuple[str, str], str]:
    """Running-estimate buffers, keyed by (input node, tracked statistic): ``running_var`` for x,
    ``running_var_<node>`` for another input. Stable: derived from node names only."""
    out: dict[tuple[str, str], str] = {}
    for node in graph.op_nodes:
        prim = node.primitive
        if prim.batch_dependent:
            (arg,) = node.inputs
            suffix = "" if arg == INPUT else f"_{arg}"
            out.setdefault((arg, prim.tracked), f"running_{prim.tracked}{suffix}")
    return out


def layer_source(graph: LayerGraph, class_name: str | None = None) -> str:
    """The whole module text of the layer: header, helpers, class."""
    graph.validate()
    class_name = check_class_name(class_name or class_name_for(graph))
    body = _class_source(graph, class_name)
    helpers = _runtime_closure(body)
    imports = ["import math\n"] if "math" in "".join(_helper_source(h) for h in helpers) else []
    header = _module_docstring(graph, class_name)
    parts = [
        header,
        "\n",
        *imports,
        *(["\n"] if imports else []),
        "import torch\nfrom torch import nn\n",
    ]
    constants = [h for h in helpers if not callable(_RUNTIME_NAMES[h])]
    if constants:
        parts.append("\n" + "".join(f"{c} = {_RUNTIME_NAMES[c]!r}\n" for c in constants))
    parts.extend(f"\n\n{_helper_source(h)}" for h in helpers if callable(_RUNTIME_NAMES[h]))
    parts.append(f"\n\n{body}")
    return "".join(parts)


@functools.lru_cache(maxsize=4096)
def _exec_source(source: str, class_name: str) -> type[nn.Module]:
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    filename = f"<evosearch layer {class_name} {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"evosearch.generated.{class_name}_{digest}")
    exec(compile(source, filename, "exec"), module.__dict__)  # our own generated text, never input
    return getattr(module, class_name)


def compile_layer(graph: LayerGraph, class_name: str | None = None) -> type[nn.Module]:
    """The layer class: constructor ``(num_features, **hyperparameters)``; ``.graph`` and ``.code``."""
    class_name = class_name or class_name_for(graph)
    source = layer_source(graph, class_name)
    cls = _exec_source(source, class_name)
    cls.graph = graph
    cls.code = source
    return cls


def build_layer(graph: LayerGraph, num_features: int, **hyperparameters) -> nn.Module:
    return compile_layer(graph)(num_features, **hyperparameters)


def export_layer(graph: LayerGraph, path: str | os.PathLike, class_name: str | None = None) -> Path:
    """Write the standalone module file (imports: torch and the standard library only)."""
    return atomic_write_text(path, layer_source(graph, class_name))


# ---- class text ---------------------------------------------------------------------------------


def _class_source(graph: LayerGraph, class_name: str) -> str:
    hp = graph.resolved_hyperparameters()
    buffers = buffer_names(graph)
    params = [
        *((name, init, Leaf(graph.node(name).op)) for name, init in graph.parameters.items()),
        *((n, float(n == "weight"), Leaf.VECTOR) for n in AFFINE_NAMES if graph.final_affine),
    ]
    signature = ", ".join(["num_features: int", *(f"{k}: {type(v).__name__} = {v!r}" for k, v in hp.items())])
    init = ["super().__init__()", "self.num_features = num_features"]
    init += [f"self.{k} = {k}" for k in hp]
    init += [f"self.{name} = nn.Parameter(torch.empty({_PARAMETER_SHAPE[kind]}))" for name, _, kind in params]
    init += [f'self.register_buffer("{b}", torch.empty(num_features))' for b in buffers.values()]
    init.append("self.reset_parameters()")
    reset = [f"nn.init.constant_(self.{name}, {init!r})" for name, init, _ in params]
    reset += [f"nn.init.{'zeros_' if key[1] == 'mean' else 'ones_'}(self.{b})" for key, b in buffers.items()]
    repr_fields = ", ".join(f"{k}={{self.{k}}}" for k in hp)
    docstring = _class_docstring(graph, hp)
    return "\n".join(
        [
            f"class {class_name}(nn.Module):",
            _indent(docstring, 1),
            "",
            f"    def __init__(self, {signature}) -> None:",
            *_indent_lines(init, 2),
            "",
            "    def reset_parameters(self) -> None:",
            *_indent_lines(reset or ["pass"], 2),
            "",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
            *_indent_lines(_forward_lines(graph, buffers), 2),
            "",
            "    def extra_repr(self) -> str:",
            f'        return f"{{self.num_features}}{", " + repr_fields if repr_fields else ""}"',
            "",
        ]
    )


def _forward_lines(graph: LayerGraph, buffers: dict[tuple[str, str], str]) -> list[str]:
    fw = _Forward(graph, plan=lower(graph))
    _emit_tracking(fw, INPUT, buffers)
    for node in graph:
        if node.name == INPUT or node.name not in fw.plan.live:
            continue
        expression = _expression(fw, node, buffers)
        fw.var[node.name] = fw.names.create(node.name)
        fw.lines.append(f"{fw.var[node.name]} = {expression}")
        _emit_tracking(fw, node.name, buffers)
    out = fw.var[graph.output]
    if graph.final_affine:
        weight, bias = (_VECTOR_CODE[graph.layout].format(name=name) for name in AFFINE_NAMES)
        fw.lines.append(f"out = {out} * {weight} + {bias}")
        out = "out"
    if fw.tracked:
        fw.lines.append("if self.training:")
        for (arg, base), (stat, buffer) in fw.tracked.items():
            fw.lines.append(
                f'    update_running(self.{buffer}, {stat}, self.momentum, {fw.var[arg]}, "{base}")'
            )
    fw.lines.append(f"return {out}")
    return fw.lines


def _emit_tracking(fw: _Forward, name: str, buffers: dict[tuple[str, str], str]) -> None:
    """After a value that batch ops read: its statistic of this batch, or the running one in eval."""
    for (arg, base), buffer in buffers.items():
        if arg != name or (arg, base) not in fw.plan.tracked:
            continue
        stat = fw.names.create(f"{base}_{fw.var[arg]}")
        fw.tracked[(arg, base)] = (stat, buffer)
        fw.lines += [
            "if self.training:",
            f'    {stat} = {_STATISTIC_CALL[fw.graph.layout]}({fw.var[arg]}, "{base}")',
            "else:",
            f"    {stat} = self.{buffer}",
        ]


def _expression(fw: _Forward, node: Node, buffers: dict) -> str:
    if node.op == Leaf.VECTOR:
        return _VECTOR_CODE[fw.graph.layout].format(name=node.name)
    if node.is_leaf:
        return _LEAF_CODE[node.op].format(name=node.name, **dict(node.attrs))
    if node.name in fw.plan.fused:
        return _fused_call(fw, fw.plan.fused[node.name], buffers)
    prim = node.primitive
    if node.name in fw.plan.with_zero:
        return prim.with_zero.format(fw.var[fw.plan.with_zero[node.name]])
    args = [fw.var[i] for i in node.inputs]
    fields = {"eps": "self.eps", "x": "x", "groups": node.attr("groups") or "self.groups"}
    if prim.kind is Kind.BATCH_MOMENT:
        fields["tracked"] = fw.tracked[(node.inputs[0], prim.tracked)][0]
    elif prim.kind is Kind.MOVING:
        fields["running"] = f"self.{buffers[(node.inputs[0], prim.tracked)]}"
    elif prim.kind is Kind.PROXY:
        fields["proxy_values"] = _proxy_values(fw, node)
    template = prim.unguarded if node.name in fw.plan.unguarded else prim.template_for(fw.graph.layout)
    return template.format(*args, **fields)


def _fused_call(fw: _Forward, norm: Normalization, buffers: dict[tuple[str, str], str]) -> str:
    """The std record's fused kernel over a, with the affine's vectors (or None)."""
    fields = {
        "weight": f"self.{norm.weight}" if norm.weight else "None",
        "bias": f"self.{norm.bias}" if norm.bias else "None",
        "eps": "self.eps",
        "groups": norm.std.attr("groups") or "self.groups",
        "training": "self.training",
        "momentum": "self.momentum",
    }
    if norm.std.primitive.batch_dependent:  # batch_norm reads and updates the running estimates
        fields["running_mean"] = f"self.{buffers[(norm.a, norm.mean.primitive.tracked)]}"
        fields["running_var"] = f"self.{buffers[(norm.a, norm.std.primitive.tracked)]}"
    return norm.std.primitive.fused_kernel_for(fw.graph.layout).format(fw.var[norm.a], **fields)


def _proxy_values(fw: _Forward, node: Node) -> str:
    """Emit the sub-graph from y to a once more, on proxy samples; return the proxied a's name."""
    a, y, scale, shift = node.inputs
    key = (a, y, scale, shift)
    if key in fw.proxies:
        return fw.proxies[key]
    local = dict(fw.var)
    local[y] = fw.names.create(f"proxy_{fw.var[y]}")
    fw.lines.append(f"{local[y]} = gaussian_proxy({fw.var[scale]}, {fw.var[shift]}, self.proxy_samples, x)")
    for name in fw.graph.proxy_path(a, y):
        inner = fw.graph.node(name)
        local[name] = fw.names.create(f"proxy_{fw.var[name]}")
        operands = [local[i] for i in inner.inputs]
        fw.lines.append(f"{local[name]} = {inner.primitive.template.format(*operands)}")
    fw.proxies[key] = local[a]
    return local[a]


# ---- helpers, docstrings ------------------------------------------------------------------------


def _runtime_closure(code: str) -> list[str]:
    """Runtime helpers (and constants) the code calls, transitively, in the runtime's order."""
    needed: set[str] = set()
    todo = [n for n in re.findall(r"[A-Za-z_]\w*", code) if n in _RUNTIME_NAMES]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        obj = _RUNTIME_NAMES[name]
        if callable(obj):
            todo.extend(n for n in _code_names(obj.__code__) if n in _RUNTIME_NAMES)
    return [n for n in _RUNTIME_NAMES if n in needed]


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


@functools.cache
def _helper_source(name: str) -> str:
    obj = _RUNTIME_NAMES[name]
    return inspect.getsource(obj) if callable(obj) else ""


def doc_safe(text: str) -> str:
    """Text fit for a docstring: one line, none of the characters that could end or escape it."""
    return _DOC_UNSAFE.sub("?", " ".join(str(text).split()))[:200]


def _formula_lines(graph: LayerGraph) -> list[str]:
    """The formula for a docstring: a statement a line, the output as ``y = ...``, at most
    :data:`_DOC_FORMULA_LINES` lines (a long one is in the graph file, and in ``graph`` at run time)."""
    *statements, output = [doc_safe(s) for s in graph.formula_statements()]
    lines = [*statements, f"y = {output}"]
    if len(lines) <= _DOC_FORMULA_LINES:
        return lines
    return [*lines[: _DOC_FORMULA_LINES - 2], f"... ({len(lines) - _DOC_FORMULA_LINES + 1} more)", lines[-1]]


def _class_docstring(graph: LayerGraph, hp: dict) -> str:
    # The name is free text from a file: only its word characters reach the source (no code-like text).
    label = re.sub(r"[^A-Za-z0-9_-]+", "_", graph.name)[:100]
    lines = [f'"""Layer {label}, generated by evosearch from its graph.', ""]
    lines.extend(f"    {line}" for line in _formula_lines(graph))
    if graph.final_affine:
        lines.append("    out = weight * y + bias")
    lines.append("")
    if graph.vectors:
        vectors = ", ".join(f"{k} (init {format_number(v)})" for k, v in graph.vectors.items())
        lines.append(f"Per-channel vectors: {vectors}.")
    if graph.scalars:
        scalars = ", ".join(f"{k} (init {format_number(v)})" for k, v in graph.scalars.items())
        lines.append(f"Per-layer scalars: {scalars}.")
    lines.append(f"Input layout: {graph.layout} {graph.layout.shape}.")
    if hp:
        lines.append("Hyperparameters: " + ", ".join(f"{k}={v!r}" for k, v in hp.items()) + ".")
    if graph.batch_dependent:
        lines.append("Batch moments use running estimates in eval mode (momentum as in BatchNorm).")
    lines.append('"""')
    return "\n".join(lines)


def _module_docstring(graph: LayerGraph, class_name: str) -> str:
    formula = "".join(f"    {line}\n" for line in _formula_lines(graph))
    return (
        f'"""{class_name}: a normalization-activation layer exported by evosearch.\n\n{formula}\n'
        "Standalone: imports only torch and the standard library. Statistics are computed in float32.\n"
        '"""\n'
    )


def _indent(text: str, level: int) -> str:
    return "\n".join(("    " * level + line) if line else "" for line in text.splitlines())


def _indent_lines(lines: list[str], level: int) -> list[str]:
    return ["    " * level + line for line in lines]
